<?php
/*
 * ModuleExtendedCDR: what Core asks of the module. Each answer is handed over to the Python
 * side: the worker that runs its processes, the nginx location and the manager.conf section it
 * prepared, a graceful stop before a disable, and its REST callback (the licence as Core's
 * `license` service says, for the Python side on 127.0.0.1).
 */

namespace Modules\ModuleExtendedCDR\Lib;

use MikoPBX\Core\Workers\Cron\WorkerSafeScriptsCore;
use MikoPBX\Modules\Config\ConfigClass;
use MikoPBX\PBXCoreREST\Lib\PBXApiResult;

require_once __DIR__ . '/PythonSide.php';

class ExtendedCDRConf extends ConfigClass
{
    public function getModuleWorkers(): array
    {
        return [
            [
                'type'   => WorkerSafeScriptsCore::CHECK_BY_PID_NOT_ALERT,
                'worker' => WorkerExtendedCDR::class,
            ],
        ];
    }

    public function createNginxLocations(): string
    {
        return $this->pythonSide()->glue('nginx_location');
    }

    public function generateManagerConf(): string
    {
        return $this->pythonSide()->glue('manager_conf');
    }

    public function onBeforeModuleDisable(): bool
    {
        $this->pythonSide()->stopWorker();
        return true;
    }

    /**
     * `POST /pbxcore/api/modules/ModuleExtendedCDR/…` from 127.0.0.1: `licence` says whether
     * Core's licence service grants the module's feature.
     */
    public function moduleRestAPICallback(array $request): PBXApiResult
    {
        $result = new PBXApiResult();
        $result->processor = __METHOD__;
        $action = strtolower((string)($request['action'] ?? ''));
        if ($action === 'licence') {
            $module = json_decode((string)file_get_contents($this->moduleDir . '/module.json'), true);
            $feature = (int)($module['lic_feature_id'] ?? 0);
            $available = $feature === 0 ? true : $this->featureAvailable($feature);
            $result->success = true;
            $result->data = ['feature' => $feature, 'available' => $available];
            return $result;
        }
        $result->success = false;
        $result->messages[] = "unknown action '{$action}'";
        return $result;
    }

    /**
     * Other modules' CDR queries are not this module's to filter (ModuleUsersUI does); the
     * two-parameter form loads on 2024.1 and on 2025+.
     */
    public function applyACLFiltersToCDRQuery(array &$parameters, array $sessionContext = []): void
    {
    }

    private function featureAvailable(int $feature): bool
    {
        $licence = $this->di->getShared('license');
        $answer = $licence->featureAvailable($feature);
        return is_array($answer) ? (bool)($answer['success'] ?? false) : (bool)$answer;
    }

    private function pythonSide(): PythonSide
    {
        return new PythonSide($this->moduleDir);
    }
}
