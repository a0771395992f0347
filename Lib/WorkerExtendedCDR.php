<?php
/*
 * ModuleExtendedCDR: the PHP worker Core keeps alive (WorkerSafeScriptsCore, by pid). It runs
 * the module's Python processes, the daemon and the pages, restarts them with a growing delay
 * when they exit, and on SIGTERM (a disable, an upgrade, Core's restart) stops them gracefully
 * before it exits itself. No constructor: WorkerBase's is final on 2024.1.
 */

namespace Modules\ModuleExtendedCDR\Lib;

use MikoPBX\Core\Workers\WorkerBase;

require_once __DIR__ . '/PythonSide.php';
require_once __DIR__ . '/ProcessKeeper.php';

class WorkerExtendedCDR extends WorkerBase
{
    /** @var bool */
    private $stopping = false;

    public function start(array $argv): void
    {
        $python = new PythonSide(dirname(__DIR__));
        file_put_contents($python->workerPidFile(), (string)getmypid());
        pcntl_async_signals(true);
        pcntl_signal(SIGTERM, [$this, 'requestStop']);
        pcntl_signal(SIGINT, [$this, 'requestStop']);
        $keeper = new ProcessKeeper($python->commands(), $this->logFile(),
            function (string $message): void {
                syslog(LOG_WARNING, 'ModuleExtendedCDR: ' . $message);
            });
        while (!$this->stopping) {
            $keeper->tick(microtime(true));
            usleep(200000);
        }
        $keeper->stop(5.0);
        @unlink($python->workerPidFile());
    }

    /**
     * Where the processes' output goes: the module's folder of the PBX's logs (Core's
     * `core.logsDir`), or nowhere when Core does not say.
     */
    private function logFile(): ?string
    {
        $di = $this->getDI();
        $logs = $di !== null && $di->has('config') ? $di->getShared('config')->path('core.logsDir') : null;
        if (!is_string($logs) || $logs === '') {
            return null;
        }
        $folder = $logs . '/ModuleExtendedCDR';
        if (!is_dir($folder) && !@mkdir($folder, 0755, true)) {
            return null;
        }
        return $folder . '/processes.log';
    }

    /** Signal handler: leave the loop, stop the processes, exit. */
    public function requestStop(int $signal): void
    {
        $this->stopping = true;
    }
}

if (isset($argv) && count($argv) > 1 && realpath($argv[0]) === __FILE__) {
    WorkerExtendedCDR::startWorker($argv);
}
