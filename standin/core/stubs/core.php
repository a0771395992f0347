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
            return $this->di ?? \StubCore::$di;      // Phalcon: else the default DI
        }

        public function __get(string $name)
        {
            return $this->di->getShared($name);
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
    // Core's install and uninstall of a module (src/Modules/Setup/PbxExtensionSetupBase.php),
    // done here on the stand-in PBX's files: the config DB by PDO, files by PHP, the same steps
    // in the same order. Not done: assets and view symlinks, volt caches, file rights beyond
    // bin/ being executable.
    abstract class PbxExtensionSetupBase extends \Phalcon\Di\Injectable
    {
        protected string $moduleUniqueID;
        protected $version;
        protected string $min_pbx_version = '';
        protected $developer;
        protected $support_email;
        protected $db;
        protected string $moduleDir;
        protected $config;
        protected array $messages;
        protected $license;
        public $lic_product_id;
        public $lic_feature_id;
        public array $wiki_links = [];

        public function __construct(string $moduleUniqueID)
        {
            $this->di = \StubCore::$di;
            $this->moduleUniqueID = $moduleUniqueID;
            $this->messages = [];
            $this->config = $this->getDI()->getShared('config');
            $this->license = $this->getDI()->getShared('license');
            $this->moduleDir = $this->config->path('core.modulesDir') . '/' . $this->moduleUniqueID;
            $settings = json_decode((string)@file_get_contents("{$this->moduleDir}/module.json"), true);
            if (is_array($settings)) {
                $this->version = $settings['version'];
                $this->min_pbx_version = $settings['min_pbx_version'] ?? '';
                $this->developer = $settings['developer'];
                $this->support_email = $settings['support_email'];
                $this->lic_product_id = $settings['lic_product_id'] ?? 0;
                $this->lic_feature_id = $settings['lic_feature_id'] ?? 0;
                $this->wiki_links = is_array($settings['wiki_links'] ?? null) ? $settings['wiki_links'] : [];
            }
            $this->messages = [];
        }

        public function installModule(): bool
        {
            try {
                foreach (['checkCompatibility', 'activateLicense', 'installFiles', 'installDB',
                          'fixFilesRights'] as $step) {
                    if (!$this->$step()) {
                        $this->messages[] = "ext_ErrorOn{$step}";
                        return false;
                    }
                }
            } catch (\Throwable $exception) {
                $this->messages[] = $exception->getMessage();
                return false;
            }
            return true;
        }

        public function checkCompatibility(): bool
        {
            $current = str_replace('-dev', '', (string)$this->setting('PBXVersion'));
            if (version_compare($current, $this->min_pbx_version) < 0) {
                $this->messages[] = "ext_ModuleDependsHigherVersion {$this->min_pbx_version}";
                return false;
            }
            return true;
        }

        public function activateLicense(): bool
        {
            return true;        // the stand-in marketplace licenses at `licence activate`
        }

        public function installFiles(): bool
        {
            // Core: `cp -r Backup/<id>/db/* <module>/db/` — what an uninstall kept comes back.
            $backup = $this->config->path('core.modulesDir') . "/Backup/{$this->moduleUniqueID}/db";
            if (is_dir($backup)) {
                self::copyTree($backup, "{$this->moduleDir}/db");
            }
            return true;
        }

        public function fixFilesRights(): bool
        {
            foreach (glob("{$this->moduleDir}/bin/*") ?: [] as $file) {
                chmod($file, 0755);
            }
            return true;
        }

        public function installDB(): bool
        {
            return $this->registerNewModule() && $this->addToSidebar();
        }

        public function registerNewModule(): bool
        {
            $texts = $this->translations();
            $db = $this->configDb();
            $found = $db->prepare('SELECT id FROM m_PbxExtensionModules WHERE uniqid = ?');
            $found->execute([$this->moduleUniqueID]);
            $values = [$this->developer, $this->version,
                $texts["SubHeader{$this->moduleUniqueID}"] ?? '', $this->support_email,
                json_encode($this->wiki_links), $this->moduleUniqueID];
            if ($found->fetchColumn() === false) {
                $db->prepare('INSERT INTO m_PbxExtensionModules (developer, version, description, '
                    . 'supportemail, wiki_links, uniqid, name, disabled, disableReason, '
                    . "disableReasonText) VALUES (?, ?, ?, ?, ?, ?, ?, '1', '', '')")
                    ->execute(array_merge($values, [$texts["Breadcrumb{$this->moduleUniqueID}"] ?? '']));
            } else {
                $db->prepare('UPDATE m_PbxExtensionModules SET developer = ?, version = ?, '
                    . 'description = ?, supportemail = ?, wiki_links = ? WHERE uniqid = ?')
                    ->execute($values);
            }
            return true;
        }

        public function addToSidebar(): bool
        {
            $this->configDb()->prepare('INSERT OR REPLACE INTO m_PbxSettings (key, value) VALUES (?, ?)')
                ->execute(["AdditionalMenuItem{$this->moduleUniqueID}", json_encode([
                    'uniqid' => $this->moduleUniqueID, 'group' => 'modules', 'iconClass' => 'puzzle',
                    'caption' => "Breadcrumb{$this->moduleUniqueID}", 'showAtSidebar' => true])]);
            return true;
        }

        public function uninstallModule(bool $keepSettings = false): bool
        {
            try {
                if (!$this->unInstallDB($keepSettings)) {
                    $this->messages[] = 'ext_UninstallDBError';
                    return false;
                }
                if (!$this->unInstallFiles($keepSettings)) {
                    $this->messages[] = 'ext_UnInstallFiles';
                    return false;
                }
            } catch (\Throwable $exception) {
                $this->messages[] = $exception->getMessage();
                return false;
            }
            return true;
        }

        public function unInstallDB(bool $keepSettings = false): bool
        {
            return $this->unregisterModule();
        }

        public function unregisterModule(): bool
        {
            $this->configDb()->prepare('DELETE FROM m_PbxExtensionModules WHERE uniqid = ?')
                ->execute([$this->moduleUniqueID]);
            return true;
        }

        public function unInstallFiles(bool $keepSettings = false): bool
        {
            // Core: rm -rf Backup/<id>; with keepSettings cp -r <module>/db Backup/<id>/; rm -rf <module>
            $backup = $this->config->path('core.modulesDir') . "/Backup/{$this->moduleUniqueID}";
            self::removeTree($backup);
            if ($keepSettings && is_dir("{$this->moduleDir}/db")) {
                self::copyTree("{$this->moduleDir}/db", "{$backup}/db");
            }
            self::removeTree($this->moduleDir);
            return true;
        }

        public function getMessages(): array
        {
            return $this->messages;
        }

        private function setting(string $key): ?string
        {
            $query = $this->configDb()->prepare('SELECT value FROM m_PbxSettings WHERE key = ?');
            $query->execute([$key]);
            $value = $query->fetchColumn();
            return $value === false ? null : (string)$value;
        }

        private function configDb(): \PDO
        {
            $db = new \PDO('sqlite:' . $this->config->path('database.dbfile'));
            $db->setAttribute(\PDO::ATTR_ERRMODE, \PDO::ERRMODE_EXCEPTION);
            $db->setAttribute(\PDO::ATTR_TIMEOUT, 10);
            return $db;
        }

        /** The module's English texts (Core's translation service takes them from Messages/). */
        private function translations(): array
        {
            $file = "{$this->moduleDir}/Messages/en.php";
            $texts = is_file($file) ? require $file : [];
            return is_array($texts) ? $texts : [];
        }

        private static function copyTree(string $from, string $to): void
        {
            if (!is_dir($to)) {
                mkdir($to, 0755, true);
            }
            foreach (scandir($from) ?: [] as $name) {
                if ($name === '.' || $name === '..') {
                    continue;
                }
                if (is_dir("{$from}/{$name}")) {
                    self::copyTree("{$from}/{$name}", "{$to}/{$name}");
                } else {
                    copy("{$from}/{$name}", "{$to}/{$name}");
                    chmod("{$to}/{$name}", fileperms("{$from}/{$name}") & 0777);
                }
            }
        }

        private static function removeTree(string $path): void
        {
            if (is_link($path) || is_file($path)) {
                unlink($path);
                return;
            }
            if (!is_dir($path)) {
                return;
            }
            foreach (scandir($path) ?: [] as $name) {
                if ($name !== '.' && $name !== '..') {
                    self::removeTree("{$path}/{$name}");
                }
            }
            rmdir($path);
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
