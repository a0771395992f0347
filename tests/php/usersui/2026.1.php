<?php
// ModuleUsersUI's Conf as on 2025+: the two-parameter hook, the role from the session context.

namespace Modules\ModuleUsersUI\Lib;

require_once __DIR__ . '/filter.php';

class UsersUIConf extends \MikoPBX\Modules\Config\ConfigClass
{
    public function applyACLFiltersToCDRQuery(array &$parameters, array $sessionContext = []): void
    {
        $group = \UsersUIShaped::groupOf($sessionContext['role'] ?? null);
        if ($group !== null) {
            \UsersUIShaped::applyCDRFilterRules($group, $parameters);
        }
    }
}
