<?php
// Core's REST route for a module's callback (`/pbxcore/api/modules/<ID>/<action>`: Core calls
// the Conf's moduleRestAPICallback and answers PBXApiResult::getResult() as JSON), for the
// tests: php rest_callback.php <modules folder> <action> <granted feature ids, comma-separated>
// under EXTCDR_CORE_PROFILE.
require __DIR__ . '/bootstrap.php';

use Modules\ModuleExtendedCDR\Lib\ExtendedCDRConf;

StubCore::$modulesDir = $argv[1];
$licence = new StubLicence();
foreach (array_filter(explode(',', $argv[3] ?? '')) as $feature) {
    $licence->features[(int)$feature] = true;
}
StubCore::$di = new StubDi();
StubCore::$di->set('license', $licence);
$result = (new ExtendedCDRConf())->moduleRestAPICallback(['action' => $argv[2]]);
echo json_encode($result->getResult());
