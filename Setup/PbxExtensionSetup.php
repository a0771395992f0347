<?php
/*
 * ModuleExtendedCDR: installed and removed by Core's own steps. After Core put the files in
 * place and copied back the data an uninstall kept, the Python side makes the module ready for
 * this PBX (`extcdr prepare`: settings for Core's paths, the DB migrated, the glue); a failure
 * fails the install with its reason. Before Core removes the files the worker is asked to stop
 * (the graceful stop itself comes earlier: Core disables a module before it uninstalls or
 * upgrades it, see ExtendedCDRConf::onBeforeModuleDisable).
 */

namespace Modules\ModuleExtendedCDR\Setup;

use MikoPBX\Modules\Setup\PbxExtensionSetupBase;
use Modules\ModuleExtendedCDR\Lib\PythonSide;

require_once dirname(__DIR__) . '/Lib/PythonSide.php';

class PbxExtensionSetup extends PbxExtensionSetupBase
{
    public function installFiles(): bool
    {
        if (!parent::installFiles()) {
            return false;
        }
        list($ready, $reason) = (new PythonSide($this->moduleDir))->prepare([
            '--config-db' => $this->config->path('database.dbfile'),
            '--cdr-db' => $this->config->path('cdrDatabase.dbfile'),
            '--recordings' => $this->config->path('asterisk.monitordir'),
        ], (int)$this->lic_feature_id > 0);
        if (!$ready) {
            $this->messages[] = $reason;
        }
        return $ready;
    }

    public function unInstallFiles(bool $keepSettings = false): bool
    {
        (new PythonSide($this->moduleDir))->stopWorker();
        return parent::unInstallFiles($keepSettings);
    }
}
