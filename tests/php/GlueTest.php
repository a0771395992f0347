<?php
// The module's PHP glue under one Core profile: what Core gets from each hook, the worker's
// keeping of real processes, the graceful stop before Core removes files (the access check:
// CheckTest).

use Modules\ModuleExtendedCDR\Lib\ExtendedCDRConf;
use Modules\ModuleExtendedCDR\Lib\ProcessKeeper;
use Modules\ModuleExtendedCDR\Lib\PythonSide;
use Modules\ModuleExtendedCDR\Lib\WorkerExtendedCDR;
use Modules\ModuleExtendedCDR\Setup\PbxExtensionSetup;
use PHPUnit\Framework\TestCase;

class GlueTest extends TestCase
{
    /** @var string */
    private $modules;
    /** @var string */
    private $module;
    /** @var StubLicence */
    private $licence;
    /** @var int[] */
    private $orphans = [];

    protected function setUp(): void
    {
        $this->modules = sys_get_temp_dir() . '/extcdr-glue-' . getmypid() . '-' . mt_rand();
        $this->module = $this->modules . '/ModuleExtendedCDR';
        mkdir($this->module . '/db', 0755, true);
        file_put_contents($this->module . '/module.json',
            json_encode(['moduleUniqueID' => 'ModuleExtendedCDR', 'version' => '0.1.0',
                'developer' => 'x', 'support_email' => 'x@example.com', 'lic_feature_id' => 7]));
        StubCore::$modulesDir = $this->modules;
        $this->licence = new StubLicence();
        StubCore::$di = new StubDi();
        StubCore::$di->set('license', $this->licence);
        StubCore::$di->set('config', new StubConfig(['core.modulesDir' => $this->modules]));
    }

    protected function tearDown(): void
    {
        foreach ($this->orphans as $pid) {
            @posix_kill($pid, SIGKILL);
        }
        exec('rm -rf ' . escapeshellarg($this->modules));
    }

    public function testThePbxIdIsReadFromTheSettingsAsTomlWritesIt(): void
    {
        $side = new PythonSide($this->module);
        $settings = $this->module . '/db/extcdr.toml';
        $this->assertSame('', $side->pbxId(), 'no settings file');
        foreach ([
            "[pbx]\nid = \"office\"\n" => 'office',
            "[web]\nport = 8087\n[ pbx ]  # this PBX\ntimezone = \"\"\nid='branch-2' # ours\n"
                => 'branch-2',
            "pbx.id = \"msk\"\n[web]\nid = \"other\"\n" => 'msk',
            "[web]\nid = \"office\"\n" => '',
            "[pbx]\nid = \"Office 2\"\n" => '',
            "[pbx]\n# id = \"office\"\n" => '',
            "[module]\ndb = \"module.db\"\n" => '',
        ] as $text => $id) {
            file_put_contents($settings, $text);
            $this->assertSame($id, $side->pbxId(), $text);
        }
    }

    public function testCoreRunsOneWorkerCheckedByItsPid(): void
    {
        $this->assertSame([['type' => 'checkPidNotAlert', 'worker' => WorkerExtendedCDR::class]],
            (new ExtendedCDRConf())->getModuleWorkers());
    }

    public function testNginxAndManagerConfAreWhatThePythonSidePrepared(): void
    {
        $conf = new ExtendedCDRConf();
        $this->assertSame('', $conf->createNginxLocations(), 'nothing prepared yet: nothing added');
        file_put_contents($this->module . '/db/glue.json', '{"nginx_location": "location /x/ {}'
            . '\n", "manager_conf": "[extcdr]\nsecret=s\n"}');
        $this->assertSame("location /x/ {}\n", $conf->createNginxLocations());
        $this->assertSame("[extcdr]\nsecret=s\n", $conf->generateManagerConf());
        file_put_contents($this->module . '/db/glue.json', '{"nginx_location": ');
        $this->assertSame('', $conf->createNginxLocations(), 'a damaged file adds nothing');
    }

    public function testTheRestCallbackAsksCoresLicenceService(): void
    {
        $conf = new ExtendedCDRConf();
        $answer = $conf->moduleRestAPICallback(['action' => 'licence']);
        $this->assertTrue($answer->success);
        $this->assertSame(['feature' => 7, 'available' => false], $answer->data);
        $this->licence->features[7] = true;
        $this->assertTrue($conf->moduleRestAPICallback(['action' => 'licence'])->data['available']);
        $unknown = $conf->moduleRestAPICallback(['action' => 'drop tables']);
        $this->assertFalse($unknown->success);
        $this->assertSame(["unknown action 'drop tables'"], $unknown->messages);
    }

    public function testOtherModulesCdrQueriesAreLeftAlone(): void
    {
        $parameters = ['conditions' => 'x'];
        (new ExtendedCDRConf())->applyACLFiltersToCDRQuery($parameters);
        $this->assertSame(['conditions' => 'x'], $parameters);
    }

    public function testBeforeCoreRemovesTheFilesTheWorkerIsStopped(): void
    {
        $worker = $this->orphan();
        file_put_contents($this->module . '/db/worker.pid', (string)$worker);
        file_put_contents($this->module . '/db/module.db', 'data');
        $setup = new PbxExtensionSetup('ModuleExtendedCDR');
        $this->assertTrue($setup->unInstallFiles(true));
        $this->assertFalse($this->alive($worker), 'the worker got SIGTERM and is gone');
        $this->assertDirectoryDoesNotExist($this->module, 'then Core removed the files');
        $this->assertSame('data', file_get_contents(
            $this->modules . '/Backup/ModuleExtendedCDR/db/module.db'), 'the data kept');
    }

    public function testDisablingStopsTheWorkerToo(): void
    {
        $worker = $this->orphan();
        file_put_contents($this->module . '/db/worker.pid', (string)$worker);
        $this->assertTrue((new ExtendedCDRConf())->onBeforeModuleDisable());
        $this->assertFalse($this->alive($worker));
    }

    public function testTheKeeperRestartsAnExitedProcessLaterAndLater(): void
    {
        $keeper = new ProcessKeeper(['quits' => ['false'], 'stays' => ['sleep', '30']]);
        $keeper->tick(1000.0);
        $first = $keeper->pids();
        $this->assertArrayHasKey('stays', $first);
        usleep(300000);
        $keeper->tick(1000.5);                      // `false` exited: again in 2 s
        $keeper->tick(1001.0);
        $this->assertArrayNotHasKey('quits', $keeper->pids());
        $keeper->tick(1002.6);                      // due: started again
        usleep(300000);
        $keeper->tick(1002.9);                      // exited again: now 4 s
        $keeper->tick(1005.0);
        $this->assertArrayNotHasKey('quits', $keeper->pids());
        $this->assertSame($first['stays'], $keeper->pids()['stays'], 'the other one untouched');
        $keeper->stop(2.0);
        $this->assertSame([], $keeper->pids());
        $this->assertFalse($this->alive($first['stays']));
    }

    public function testAProcessThatIgnoresTermIsKilledAfterThePatience(): void
    {
        $keeper = new ProcessKeeper(['stubborn' => ['sh', '-c', 'trap "" TERM; sleep 30 & wait']]);
        $keeper->tick(0.0);
        usleep(200000);
        $pid = $keeper->pids()['stubborn'];
        $started = microtime(true);
        $keeper->stop(0.5);
        $this->assertFalse($this->alive($pid));
        $this->assertLessThan(3.0, microtime(true) - $started);
    }

    /** A process that is not this one's child (as the worker is not Core's installer's). */
    private function orphan(): int
    {
        $pid = (int)exec('sleep 30 > /dev/null 2>&1 & echo $!');
        $this->orphans[] = $pid;
        return $pid;
    }

    private function alive(int $pid): bool
    {
        $state = @file_get_contents("/proc/{$pid}/stat");
        return $state !== false && !preg_match('/^\d+ \(.*\) Z /', $state);
    }
}
