<?php
/*
 * ModuleExtendedCDR: installed and removed by Core's own steps. Before Core removes the
 * module's files (uninstall, and the uninstall an upgrade starts with), the worker is asked to
 * stop the Python processes gracefully, so that Core's `kill -9` of processes holding files in
 * `bin/` finds nothing left to kill.
 */

namespace Modules\ModuleExtendedCDR\Setup;

use MikoPBX\Modules\Setup\PbxExtensionSetupBase;
use Modules\ModuleExtendedCDR\Lib\PythonSide;

require_once dirname(__DIR__) . '/Lib/PythonSide.php';

class PbxExtensionSetup extends PbxExtensionSetupBase
{
    public function unInstallFiles(bool $keepSettings = false): bool
    {
        (new PythonSide($this->moduleDir))->stopWorker();
        return parent::unInstallFiles($keepSettings);
    }
}
