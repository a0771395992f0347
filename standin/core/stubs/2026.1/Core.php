<?php
// Stubs of MikoPBX Core 2026.1 (mikopbx/Core, tag 2026.1.223): what differs from the other platform
// (the rest: ../core.php).

namespace {
    require_once dirname(__DIR__) . '/core.php';
}

namespace MikoPBX\Modules\Config {
    abstract class ConfigClass extends \MikoPBX\Core\Asterisk\Configs\AsteriskConfigClass
    {
        use ConfigClassCommon;

        public function applyACLFiltersToCDRQuery(
            /** @scrutinizer ignore-unused */ array &$parameters,
            /** @scrutinizer ignore-unused */ array $sessionContext = []
        ): void {
        }
    }
}

namespace MikoPBX\Core\Workers {
    abstract class WorkerBase extends \Phalcon\Di\Injectable implements WorkerInterface
    {
        public function __construct()
        {
        }

        public static function startWorker(array $argv, bool $setProcName = true): void
        {
            if (($argv[1] ?? '') === 'start') {
                $worker = new static();
                $worker->start($argv);
            }
        }
    }
}
