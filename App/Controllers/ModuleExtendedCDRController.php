<?php
/*
 * ModuleExtendedCDR: the sidebar's page and the access check. Both run behind Core's
 * SecurityPlugin (the admin's session on 2024.1, JWT on 2025+). `index` leads to the pages the
 * Python side serves; `check` is what nginx's access_by_lua_block captures for every request to
 * them: 200 with who the user is, or 401.
 */

namespace Modules\ModuleExtendedCDR\App\Controllers;

use MikoPBX\AdminCabinet\Controllers\BaseController;
use Modules\ModuleExtendedCDR\Lib\PythonSide;
use Modules\ModuleExtendedCDR\Lib\Viewer;

require_once dirname(__DIR__, 2) . '/Lib/PythonSide.php';
require_once dirname(__DIR__, 2) . '/Lib/Viewer.php';

class ModuleExtendedCDRController extends BaseController
{
    /** Where the Python side's pages are, under the module's own URL. */
    public const PAGES = '/admin-cabinet/module-extended-c-d-r/calls/';

    public function indexAction(): void
    {
        $this->view->disable();
        $this->response->redirect(self::PAGES, true);
    }

    /** The module's folder under Core's modules (its settings: this PBX's id). */
    public const MODULE = 'ModuleExtendedCDR';

    /**
     * 200 with who the user is and which calls they may see (Lib/Viewer; in a central history
     * of several PBXs, a user who is no admin sees this PBX's only), or 401. nginx's lua
     * block copies the headers onto the request to the pages.
     */
    public function checkAction(): void
    {
        $this->view->disable();
        $di = $this->di;
        $viewer = Viewer::ofRequest($di, $di->has('session') ? $this->session : null,
            $di->has('cookies') ? $this->cookies : null, $di->has('request') ? $this->request : null);
        if ($viewer === null) {
            $this->response->setStatusCode(401, 'Unauthorized')->send();
            return;
        }
        $this->response->setStatusCode(200, 'OK');
        $modules = $di->has('config')
            ? (string)$di->getShared('config')->path('core.modulesDir') : '';
        $pbx = $modules === '' ? '' : (new PythonSide($modules . '/' . self::MODULE))->pbxId();
        foreach ($viewer->headers($pbx) as $name => $value) {
            $this->response->setHeader($name, $value);
        }
        $this->response->send();
    }
}
