<?php
// Stubs of MikoPBX Core: the declarations 2024.1.114 and 2026.1.223 share (mikopbx/Core), exactly
// as Core declares them; behaviour only where a test looks at it. Each profile's Core.php adds
// what differs.

namespace Phalcon\Di {
    // Phalcon 4.1 and 5.9 alike: the injectable base of Core classes.
    abstract class Injectable
    {
        public $di;

        public function getDI()
        {
            return $this->di;
        }
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

        public function getResult(): array
        {
            return [
                'result'    => $this->success,
                'data'      => $this->data,
                'messages'  => $this->messages,
                'function'  => $this->function,
                'processor' => $this->processor,
                'pid'       => getmypid(),
            ];
        }
    }
}

namespace MikoPBX\Modules\Config {
    use MikoPBX\PBXCoreREST\Lib\PBXApiResult;

    // What ConfigClass declares alike on both platforms (each profile's ConfigClass uses it and
    // adds its own applyACLFiltersToCDRQuery).
    trait ConfigClassCommon
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
    }

    interface CDRConfigInterface
    {
        // `public const string` on 2026.1 (PHP 8.3 syntax); the value is the same.
        public const APPLY_ACL_FILTERS_TO_CDR_QUERY = 'applyACLFiltersToCDRQuery';
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
}

namespace MikoPBX\Core\Workers\Cron {
    class WorkerSafeScriptsCore
    {
        public const CHECK_BY_PID_NOT_ALERT = 'checkPidNotAlert';
    }
}

namespace MikoPBX\AdminCabinet\Controllers {
    // Phalcon\Mvc\Controller gives a controller these services (the DI's, by name).
    class BaseController extends \Phalcon\Di\Injectable
    {
        public $view;
        public $response;

        public function __construct()
        {
            $this->di = \StubCore::$di;
            $this->view = new \StubView();
            $this->response = new \StubResponse();
        }

        public function __get(string $name)
        {
            return $this->di->getShared($name);
        }
    }
}

namespace MikoPBX\Common\Providers {
    class PBXConfModulesProvider
    {
        // Core: every enabled module's Conf that has the method, by call_user_func_array (so
        // references in $arguments reach the module), a throwing module skipped.
        public static function hookModulesMethod(string $methodName, array $arguments = []): array
        {
            $result = [];
            foreach (\StubCore::$modules as $configClassObj) {
                if (!method_exists($configClassObj, $methodName)) {
                    continue;
                }
                try {
                    $response = call_user_func_array([$configClassObj, $methodName], $arguments);
                } catch (\Throwable $e) {
                    continue;
                }
                if (!empty($response)) {
                    $result[] = $response;
                }
            }
            return $result;
        }
    }
}
