<?php
/*
 * ModuleExtendedCDR: the module's Python side as Core's PHP sees it. Core loads thin PHP
 * classes; everything they do is handed over here: which processes run the module, and the
 * texts (nginx location, manager.conf section) the Python side prepared in the data folder.
 * Plain PHP, no Core class: it parses and runs on PHP 7.4 and 8.x.
 */

namespace Modules\ModuleExtendedCDR\Lib;

class PythonSide
{
    /** What the Python side prepares for Core, written by `extcdr` into the data folder. */
    public const GLUE_FILE = 'db/glue.json';

    /** The worker's own pid, so that a stop before Core's `kill -9` can reach it. */
    public const WORKER_PID_FILE = 'db/worker.pid';

    /** @var string */
    private $moduleDir;

    public function __construct(string $moduleDir)
    {
        $this->moduleDir = rtrim($moduleDir, '/');
    }

    /**
     * The module's processes, by name: the resident daemon and the pages.
     *
     * @return array<string, string[]>
     */
    public function commands(): array
    {
        $extcdr = $this->moduleDir . '/bin/extcdr';
        $config = $this->moduleDir . '/db/extcdr.toml';
        return [
            'daemon' => [$extcdr, 'daemon', '--config', $config, '--syslog'],
            'web'    => [$extcdr, 'web', '--config', $config],
        ];
    }

    /**
     * One text the Python side prepared for Core (`nginx_location`, `manager_conf`); empty when
     * it has not yet (Core then adds nothing, which is harmless).
     */
    public function glue(string $key): string
    {
        $path = $this->moduleDir . '/' . self::GLUE_FILE;
        if (!is_file($path)) {
            return '';
        }
        $values = json_decode((string)file_get_contents($path), true);
        if (!is_array($values) || !isset($values[$key]) || !is_string($values[$key])) {
            return '';
        }
        return $values[$key];
    }

    public function workerPidFile(): string
    {
        return $this->moduleDir . '/' . self::WORKER_PID_FILE;
    }

    /**
     * Ask the running worker to stop its processes and wait until it has (at most
     * `$patience` seconds): called before Core removes or replaces the module's files.
     */
    public function stopWorker(float $patience = 10.0): bool
    {
        $path = $this->workerPidFile();
        $pid = is_file($path) ? (int)trim((string)file_get_contents($path)) : 0;
        if ($pid <= 0 || !posix_kill($pid, 0)) {
            return true;
        }
        posix_kill($pid, SIGTERM);
        $deadline = microtime(true) + $patience;
        while (microtime(true) < $deadline) {
            if (!posix_kill($pid, 0)) {
                return true;
            }
            usleep(100000);
        }
        return false;
    }
}
