<?php
// Core's classes for a module's PHP worker on the stand-in PBX, as Core starts workers:
//   EXTCDR_CORE_PROFILE=<profile> EXTCDR_PBX_ROOT=<PBX folder> \
//       php -d auto_prepend_file=prepend.php -f <worker file> start
// The default DI then holds Core's config for that PBX folder (core.logsDir: its logs/).
$profile = getenv('EXTCDR_CORE_PROFILE') ?: '2026.1';
if (!in_array($profile, ['2024.1', '2026.1'], true)) {
    fwrite(STDERR, "prepend: unknown Core profile {$profile}\n");
    exit(2);
}
require_once __DIR__ . '/stubs/common.php';
require_once __DIR__ . "/stubs/{$profile}/Core.php";
$root = getenv('EXTCDR_PBX_ROOT');
if (is_string($root) && $root !== '') {
    StubCore::ofPbx($root);
}
