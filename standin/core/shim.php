<?php
/*
 * The stand-in PBX's Core: the steps of MikoPBX Core that run a module's own PHP, on the
 * stand-in's files, under stubs of Core's classes (stubs/<profile>/Core.php). The Python side of
 * the stand-in (pbxmodule.lifecycle) does the rest of Core's work around these calls.
 *
 *   php shim.php <profile> <PBX folder> <action> <module id> [keep]
 *
 * install    new PbxExtensionSetup(<id>)->installModule()  (Core's WorkerModuleInstaller)
 * enable     <Name>Conf->onBeforeModuleEnable(), then the hooks Core asks when a module is on
 * hooks      createNginxLocations(), generateManagerConf(), getModuleWorkers()
 * disable    <Name>Conf->onBeforeModuleDisable(), onAfterModuleDisable()
 * uninstall  kill -9 of processes holding <module>/bin/* files, then
 *            PbxExtensionSetup->uninstallModule(keep)       (Core's UninstallModuleAction)
 * index      the module controller's indexAction: where the sidebar entry leads
 *
 * Prints one JSON object: {"ok": bool, "messages": [...], ...what the action returns}.
 */

if (count($argv) < 5) {
    fwrite(STDERR, "usage: php shim.php <profile> <PBX folder> <action> <module id> [keep]\n");
    exit(2);
}
list(, $profile, $root, $action, $moduleId) = $argv;
if (!preg_match('/^[A-Za-z][A-Za-z0-9_]{0,63}$/', $moduleId) || !in_array($profile, ['2024.1', '2026.1'], true)) {
    fwrite(STDERR, "shim: bad module id or profile\n");
    exit(2);
}
require __DIR__ . '/stubs/common.php';
require __DIR__ . "/stubs/{$profile}/Core.php";

$root = rtrim($root, '/');
$modules = "{$root}/custom_modules";
StubCore::ofPbx($root);
// Core's autoloader: the Modules namespace lives in the modules folder.
spl_autoload_register(function (string $class) use ($modules): void {
    $parts = explode('\\', $class);
    if (count($parts) > 2 && $parts[0] === 'Modules') {
        $file = $modules . '/' . implode('/', array_slice($parts, 1)) . '.php';
        if (is_file($file)) {
            require_once $file;
        }
    }
});

$moduleDir = "{$modules}/{$moduleId}";
$setupClass = "Modules\\{$moduleId}\\Setup\\PbxExtensionSetup";
$confClass = "Modules\\{$moduleId}\\Lib\\" . str_replace('Module', '', $moduleId) . 'Conf';
$answer = ['ok' => true, 'messages' => []];

switch ($action) {
    case 'install':
        $setup = new $setupClass($moduleId);
        $answer['ok'] = $setup->installModule();
        $answer['messages'] = $setup->getMessages();
        break;
    case 'enable':
        $conf = new $confClass();
        $answer['ok'] = $conf->onBeforeModuleEnable();
        if ($answer['ok']) {
            $conf->onAfterModuleEnable();
            $answer += hooks($conf);
        }
        break;
    case 'hooks':
        $answer += hooks(new $confClass());
        break;
    case 'disable':
        $conf = new $confClass();
        $answer['ok'] = $conf->onBeforeModuleDisable();
        $conf->onAfterModuleDisable();
        break;
    case 'uninstall':
        $answer['killed'] = killHolders("{$moduleDir}/bin");
        $keep = ($argv[5] ?? '') === 'keep';
        if (class_exists($setupClass)) {
            $setup = new $setupClass($moduleId);
            $answer['ok'] = $setup->uninstallModule($keep);
            $answer['messages'] = $setup->getMessages();
        }
        break;
    case 'index':
        $controllerClass = "Modules\\{$moduleId}\\App\\Controllers\\{$moduleId}Controller";
        $controller = new $controllerClass();
        $controller->indexAction();
        $answer['redirect'] = $controller->response->redirect;
        break;
    default:
        fwrite(STDERR, "shim: unknown action {$action}\n");
        exit(2);
}
echo json_encode($answer), "\n";

/** What Core takes from an enabled module's Conf. */
function hooks($conf): array
{
    return ['nginx_location' => $conf->createNginxLocations(),
        'manager_conf' => $conf->generateManagerConf(),
        'workers' => $conf->getModuleWorkers()];
}

/**
 * Core: `kill -9 $(lsof <module>/bin/* | … awk '{ print $2 }')` — every process that has one
 * of those files open or running.
 */
function killHolders(string $bin): array
{
    $files = [];
    foreach (glob("{$bin}/*") ?: [] as $file) {
        $files[realpath($file)] = true;
    }
    $killed = [];
    foreach ($files ? (glob('/proc/[0-9]*') ?: []) : [] as $proc) {
        $pid = (int)basename($proc);
        if ($pid === getmypid()) {
            continue;
        }
        $held = array_merge([@readlink("{$proc}/exe")], array_map(function ($fd) {
            return @readlink($fd);
        }, glob("{$proc}/fd/*") ?: []));
        foreach ($held as $path) {
            if ($path !== false && isset($files[$path])) {
                posix_kill($pid, SIGKILL);
                $killed[] = $pid;
                break;
            }
        }
    }
    return $killed;
}
