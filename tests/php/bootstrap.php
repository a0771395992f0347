<?php
// The Core profile to load the module against (EXTCDR_CORE_PROFILE: 2024.1 or 2026.1), then the
// module's PHP as Core would load it, and a ModuleUsersUI-shaped module of the same platform.
$profile = getenv('EXTCDR_CORE_PROFILE') ?: '2026.1';
require dirname(__DIR__, 2) . '/standin/core/stubs/common.php';
require dirname(__DIR__, 2) . "/standin/core/stubs/{$profile}/Core.php";
$root = dirname(__DIR__, 2);
foreach (['Lib/PythonSide.php', 'Lib/ProcessKeeper.php', 'Lib/ExtendedCDRConf.php',
          'Lib/WorkerExtendedCDR.php', 'Lib/Viewer.php', 'Setup/PbxExtensionSetup.php',
          'App/Controllers/ModuleExtendedCDRController.php'] as $file) {
    require_once "{$root}/{$file}";
}
require_once __DIR__ . "/usersui/{$profile}.php";
