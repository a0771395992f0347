<?php
// Stubs of MikoPBX Core 2024.1 (mikopbx/Core, tag 2024.1.114): the signatures the module's
// classes meet, exactly as Core declares them; behaviour only where a test looks at it.

namespace Phalcon\Di {
    // Phalcon 4.1: the injectable base of Core classes.
    abstract class Injectable
    {
        public $di;
    }
}

namespace MikoPBX\Core\Asterisk\Configs {
    abstract class AsteriskConfigClass extends \Phalcon\Di\Injectable
    {
        public function __construct()
        {
            $this->di = \StubCore::$di;
        }

        public function generateManagerConf(): string
        {
            return '';
        }
    }
}

namespace MikoPBX\PBXCoreREST\Lib {
    class PBXApiResult
    {
        public bool $success = false;
        public array $data;
        public array $messages;
        public string $processor;
        public string $function;

        public function __construct()
        {
            $this->success = false;
            $this->data = [];
            $this->messages = [];
            $this->function = '';
            $this->processor = '';
        }
    }
}

namespace MikoPBX\Modules\Config {
    use MikoPBX\PBXCoreREST\Lib\PBXApiResult;

    abstract class ConfigClass extends \MikoPBX\Core\Asterisk\Configs\AsteriskConfigClass
    {
        public string $moduleUniqueId;
        protected string $moduleDir;
        protected array $messages;

        public function __construct()
        {
            parent::__construct();
            $parts = explode('\\', (new \ReflectionClass(static::class))->getNamespaceName());
            if (count($parts) === 3 && $parts[0] === 'Modules') {
                $this->moduleUniqueId = $parts[1];
                $this->moduleDir = \StubCore::$modulesDir . '/' . $this->moduleUniqueId;
            }
            $this->messages = [];
        }

        public function moduleRestAPICallback(array $request): PBXApiResult
        {
            return new PBXApiResult();
        }

        public function getModuleWorkers(): array
        {
            return [];
        }

        public function onBeforeModuleEnable(): bool
        {
            return true;
        }

        public function onAfterModuleEnable(): void
        {
        }

        public function onBeforeModuleDisable(): bool
        {
            return true;
        }

        public function onAfterModuleDisable(): void
        {
        }

        public function createNginxLocations(): string
        {
            return '';
        }

    public function applyACLFiltersToCDRQuery(/** @scrutinizer ignore-unused */ array &$parameters): void
    {
    }
    }
}

namespace MikoPBX\Modules\Setup {
    abstract class PbxExtensionSetupBase extends \Phalcon\Di\Injectable
    {
        protected $moduleUniqueID;
        protected $moduleDir;

        public function __construct(string $moduleUniqueID)
        {
            $this->moduleUniqueID = $moduleUniqueID;
            $this->moduleDir = \StubCore::$modulesDir . '/' . $moduleUniqueID;
        }

        public function unInstallFiles(bool $keepSettings = false): bool
        {
            \StubCore::$calls[] = ['unInstallFiles', $keepSettings];
            return true;
        }
    }
}

namespace MikoPBX\Core\Workers {
    use MikoPBX\Core\System\BeanstalkClient;

    interface WorkerInterface
    {
        public function __construct();

        public function start(array $argv): void;
    }

    abstract class WorkerBase extends \Phalcon\Di\Injectable implements WorkerInterface
    {
    final public function __construct()
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

namespace MikoPBX\Core\Workers\Cron {
    class WorkerSafeScriptsCore
    {
        public const CHECK_BY_PID_NOT_ALERT = 'checkPidNotAlert';
    }
}

namespace MikoPBX\AdminCabinet\Controllers {
    // Phalcon\Mvc\Controller gives a controller these services.
    class BaseController extends \Phalcon\Di\Injectable
    {
        public $view;
        public $response;
        public $session;
    }
}
