<?php
/*
 * ModuleExtendedCDR: keeps a few commands running. A command that exits is started again after
 * a delay that doubles with each quick exit (2 s up to 60 s) and resets once it has run for a
 * minute; `stop()` asks each with SIGTERM and kills what is still there after the patience.
 * Plain PHP (proc_open, posix), no Core class: the worker wires it, tests run it for real.
 */

namespace Modules\ModuleExtendedCDR\Lib;

class ProcessKeeper
{
    public const FIRST_DELAY = 2.0;
    public const LONGEST_DELAY = 60.0;
    public const SETTLED_AFTER = 60.0;

    /** @var array<string, string[]> */
    private $commands;

    /** @var array<string, resource> */
    private $running = [];

    /** @var array<string, float> when each started */
    private $startedAt = [];

    /** @var array<string, float> when each may start again */
    private $dueAt = [];

    /** @var array<string, float> */
    private $delay = [];

    /** @var string|null where the commands' output goes */
    private $log;

    /** @var callable|null fn(string $message): void */
    private $say;

    /**
     * @param array<string, string[]> $commands name => argv
     */
    public function __construct(array $commands, ?string $log = null, ?callable $say = null)
    {
        $this->commands = $commands;
        $this->log = $log;
        $this->say = $say;
        foreach (array_keys($commands) as $name) {
            $this->dueAt[$name] = 0.0;
            $this->delay[$name] = self::FIRST_DELAY;
        }
    }

    /**
     * Start what is due and note what exited; call it often (the worker's loop).
     */
    public function tick(float $now): void
    {
        foreach ($this->commands as $name => $argv) {
            if (isset($this->running[$name])) {
                $status = proc_get_status($this->running[$name]);
                if ($status['running']) {
                    if ($now - $this->startedAt[$name] >= self::SETTLED_AFTER) {
                        $this->delay[$name] = self::FIRST_DELAY;
                    }
                    continue;
                }
                proc_close($this->running[$name]);
                unset($this->running[$name]);
                $this->dueAt[$name] = $now + $this->delay[$name];
                $this->tell(sprintf('%s exited (%d); again in %.0f s', $name,
                    $status['exitcode'], $this->delay[$name]));
                $this->delay[$name] = min($this->delay[$name] * 2, self::LONGEST_DELAY);
                continue;
            }
            if ($now >= $this->dueAt[$name]) {
                $this->start($name, $argv, $now);
            }
        }
    }

    /** @return array<string, int> name => pid of what runs now */
    public function pids(): array
    {
        $pids = [];
        foreach ($this->running as $name => $process) {
            $status = proc_get_status($process);
            if ($status['running']) {
                $pids[$name] = (int)$status['pid'];
            }
        }
        return $pids;
    }

    /**
     * SIGTERM to everything, then SIGKILL to what is still running after `$patience` seconds.
     */
    public function stop(float $patience = 5.0): void
    {
        foreach ($this->pids() as $pid) {
            posix_kill($pid, SIGTERM);
        }
        $deadline = microtime(true) + $patience;
        while ($this->pids() !== [] && microtime(true) < $deadline) {
            usleep(50000);
        }
        foreach ($this->pids() as $name => $pid) {
            posix_kill($pid, SIGKILL);
            $this->tell("{$name} did not stop within {$patience} s: killed");
        }
        foreach ($this->running as $process) {
            proc_close($process);
        }
        $this->running = [];
    }

    private function start(string $name, array $argv, float $now): void
    {
        $out = $this->log === null ? ['file', '/dev/null', 'a'] : ['file', $this->log, 'a'];
        // An argv array (PHP 7.4+): no shell, and the pid is the program's own.
        $process = proc_open($argv, [0 => ['file', '/dev/null', 'r'], 1 => $out, 2 => $out],
            $pipes);
        if (!is_resource($process)) {
            $this->dueAt[$name] = $now + $this->delay[$name];
            $this->tell("{$name} could not be started");
            return;
        }
        $this->running[$name] = $process;
        $this->startedAt[$name] = $now;
    }

    private function tell(string $message): void
    {
        if ($this->say !== null) {
            call_user_func($this->say, $message);
        }
    }
}
