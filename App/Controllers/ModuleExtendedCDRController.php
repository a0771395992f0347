<?php
/*
 * ModuleExtendedCDR: the sidebar's page and the access check. Both run behind Core's
 * SecurityPlugin (the admin's session on 2024.1, JWT on 2025+). `index` leads to the pages the
 * Python side serves; `check` is what nginx's access_by_lua_block captures for every request to
 * them: 200 with who the user is, or 401.
 */

namespace Modules\ModuleExtendedCDR\App\Controllers;

use MikoPBX\AdminCabinet\Controllers\BaseController;

class ModuleExtendedCDRController extends BaseController
{
    /** Where the Python side's pages are, under the module's own URL. */
    public const PAGES = '/admin-cabinet/module-extended-c-d-r/calls/';

    public function indexAction(): void
    {
        $this->view->disable();
        $this->response->redirect(self::PAGES, true);
    }

    public function checkAction(): void
    {
        $this->view->disable();
        $auth = $this->session->has('authAdminCabinet') ? $this->session->get('authAdminCabinet') : [];
        $role = is_array($auth) ? (string)($auth['role'] ?? '') : '';
        if ($role === '') {
            $this->response->setStatusCode(401, 'Unauthorized')->send();
            return;
        }
        $this->response->setStatusCode(200, 'OK');
        // SessionController::USER_NAME and ::ROLE; AclProvider::ROLE_ADMINS is 'admins'.
        $this->response->setHeader('X-Extcdr-User', (string)($auth['userName'] ?? ''));
        $this->response->setHeader('X-Extcdr-Role', $role === 'admins' ? 'admin' : 'operator');
        $this->response->send();
    }
}
