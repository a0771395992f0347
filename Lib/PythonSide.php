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

    /** The module's settings, which the Python side reads (and an admin edits). */
    public const SETTINGS_FILE = 'db/extcdr.toml';

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

    /**
     * Make the module ready on this PBX (Core's install, after the data an uninstall kept came
     * back): `extcdr prepare` writes the settings for these paths, migrates the module's DB and
     * prepares the glue. [true, ''] or [false, the one line saying why].
     *
     * @param array<string, string> $pbx '--config-db', '--cdr-db', '--recordings' => path
     */
    public function prepare(array $pbx, bool $coreLicence): array
    {
        $command = [$this->moduleDir . '/bin/extcdr', 'prepare', '--module-dir', $this->moduleDir];
        foreach ($pbx as $flag => $path) {
            $command[] = $flag;
            $command[] = (string)$path;
        }
        if ($coreLicence) {
            $command[] = '--core-licence';
        }
        $process = proc_open($command, [0 => ['file', '/dev/null', 'r'], 1 => ['pipe', 'w'],
            2 => ['pipe', 'w']], $pipes);
        if (!is_resource($process)) {
            return [false, 'extcdr prepare could not be started'];
        }
        stream_get_contents($pipes[1]);
        $errors = trim((string)stream_get_contents($pipes[2]));
        fclose($pipes[1]);
        fclose($pipes[2]);
        if (proc_close($process) === 0) {
            return [true, ''];
        }
        $lines = $errors === '' ? ['extcdr prepare failed'] : explode("\n", $errors);
        return [false, (string)end($lines)];
    }

    /**
     * This PBX's id in a central history of several PBXs (the settings' `[pbx]` `id`, or a
     * top-level `pbx.id`), '' when it has none (the only PBX of its history). Read as TOML
     * writes such a line: `id = "office"`; only an id of the form the Python side accepts
     * (1-32 of a-z, 0-9 and '-'), which refuses to start with any other.
     */
    public function pbxId(): string
    {
        $path = $this->moduleDir . '/' . self::SETTINGS_FILE;
        $lines = is_file($path) ? file($path, FILE_IGNORE_NEW_LINES) : false;
        $table = '';
        foreach ($lines ?: [] as $line) {
            $line = trim($line);
            if (preg_match('/^\[\s*([A-Za-z0-9_.-]+)\s*\]\s*(#.*)?$/', $line, $header) === 1) {
                $table = $header[1];
            } elseif (preg_match('/^(pbx\.)?id\s*=\s*(["\'])([a-z0-9][a-z0-9-]{0,31})\2\s*(#.*)?$/',
                    $line, $found) === 1 && ($table === 'pbx') === ($found[1] === '')) {
                return $found[3];
            }
        }
        return '';
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
