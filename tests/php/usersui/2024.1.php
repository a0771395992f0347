<?php
// ModuleUsersUI's Conf as on 2024.1: the one-parameter hook, the role from the admin's session.

namespace Modules\ModuleUsersUI\Lib;

require_once __DIR__ . '/filter.php';

class UsersUIConf extends \MikoPBX\Modules\Config\ConfigClass
{
    public function applyACLFiltersToCDRQuery(array &$parameters): void
    {
        $session = $this->getDI()->getShared('session')->get('authAdminCabinet');
        $group = \UsersUIShaped::groupOf(is_array($session) ? ($session['role'] ?? null) : null);
        if ($group !== null) {
            \UsersUIShaped::applyCDRFilterRules($group, $parameters);
        }
    }
}
