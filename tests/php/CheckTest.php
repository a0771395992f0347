<?php
// The access check nginx's lua block asks before every request to the pages: who is logged in
// to the admin cabinet (session on 2024.1, JWT on 2025+) and which calls they may see, as a
// ModuleUsersUI access group restricts them.

use Modules\ModuleExtendedCDR\App\Controllers\ModuleExtendedCDRController;
use Modules\ModuleUsersUI\Lib\UsersUIConf;
use PHPUnit\Framework\TestCase;

class CheckTest extends TestCase
{
    /** @var StubDi */
    private $di;

    protected function setUp(): void
    {
        StubCore::$modulesDir = sys_get_temp_dir();
        $this->di = StubCore::$di = new StubDi();
        $this->di->set('cookies', new StubCookies());
        $this->di->set('request', new StubRequest());
        if (getenv('EXTCDR_CORE_PROFILE') === '2024.1') {
            $this->di->set('session', new StubSession());
        } else {
            $this->di->set('jwt', new StubJwt());
        }
        StubCore::$modules = [new UsersUIConf()];
        UsersUIShaped::$groups = [
            '3' => ['cdrFilterMode' => 'selected', 'fullAccess' => '0', 'extensions' => ['201', '202']],
            '4' => ['cdrFilterMode' => 'outgoing-selected', 'fullAccess' => '0', 'extensions' => ['203']],
            '5' => ['cdrFilterMode' => 'not-selected', 'fullAccess' => '0', 'extensions' => ['201']],
            '6' => ['cdrFilterMode' => 'selected', 'fullAccess' => '0', 'extensions' => []],
            '7' => ['cdrFilterMode' => 'all', 'fullAccess' => '0', 'extensions' => ['201']],
            '8' => ['cdrFilterMode' => 'selected', 'fullAccess' => '1', 'extensions' => ['201']],
        ];
    }

    public function testTheAdminSeesEverything(): void
    {
        $this->assertSame(['X-Extcdr-User' => 'admin', 'X-Extcdr-Role' => 'admin',
            'X-Extcdr-Extensions' => '', 'X-Extcdr-Scope' => '', 'X-Extcdr-Pbxs' => ''],
            $this->check('admin', 'admins'));
    }

    public function testAnAccessGroupOfSelectedEmployeesSeesTheirCalls(): void
    {
        $this->assertSame(['X-Extcdr-User' => 'anna', 'X-Extcdr-Role' => 'operator',
            'X-Extcdr-Extensions' => '201,202', 'X-Extcdr-Scope' => 'involved',
            'X-Extcdr-Pbxs' => ''], $this->check('anna', 'UsersUIRoleID3'));
    }

    public function testOutgoingSelectedSeesTheCallsTheyPlaced(): void
    {
        $headers = $this->check('boris', 'UsersUIRoleID4');
        $this->assertSame(['operator', '203', 'placed'], [$headers['X-Extcdr-Role'],
            $headers['X-Extcdr-Extensions'], $headers['X-Extcdr-Scope']]);
    }

    public function testNotSelectedSeesEveryoneElsesCalls(): void
    {
        $headers = $this->check('vera', 'UsersUIRoleID5');
        $this->assertSame(['operator', '201', 'except'], [$headers['X-Extcdr-Role'],
            $headers['X-Extcdr-Extensions'], $headers['X-Extcdr-Scope']]);
    }

    public function testSelectedWithNobodySelectedSeesNothing(): void
    {
        $headers = $this->check('gleb', 'UsersUIRoleID6');
        $this->assertSame(['operator', '', 'involved'], [$headers['X-Extcdr-Role'],
            $headers['X-Extcdr-Extensions'], $headers['X-Extcdr-Scope']]);
    }

    public function testAGroupWithoutACdrFilterSeesAllCallsButIsNoAdmin(): void
    {
        $this->assertSame('supervisor', $this->check('dina', 'UsersUIRoleID7')['X-Extcdr-Role']);
        $this->assertSame('supervisor', $this->check('egor', 'UsersUIRoleID8')['X-Extcdr-Role']);
    }

    public function testACdrConditionNotUnderstoodShowsNothing(): void
    {
        StubCore::$modules = [new OtherCdrFilter()];
        $headers = $this->check('anna', 'UsersUIRoleID3');
        $this->assertSame(['operator', ''], [$headers['X-Extcdr-Role'], $headers['X-Extcdr-Extensions']]);
    }

    public function testNobodyLoggedInIsRefused(): void
    {
        $controller = new ModuleExtendedCDRController();
        $controller->checkAction();
        $this->assertSame(401, $controller->response->status);
        $this->assertArrayNotHasKey('X-Extcdr-User', $controller->response->headers);
        $this->assertTrue($controller->response->sent);
    }

    public function testARefreshTokenNobodyIssuedIsRefused(): void
    {
        // Core 2025+'s SecurityPlugin lets any non-empty refreshToken cookie through to the
        // action; only the token's session in the JWT service says who it is (2024.1: none).
        $this->di->getShared('cookies')->values['refreshToken'] = 'forged';
        $controller = new ModuleExtendedCDRController();
        $controller->checkAction();
        $this->assertSame(401, $controller->response->status);
    }

    public function testABearerTokenNamesTheUserFrom2025(): void
    {
        $jwt = $this->di->has('jwt');
        if ($jwt) {
            $this->di->getShared('jwt')->accessTokens['t0k'] = ['userId' => 'anna',
                'role' => 'UsersUIRoleID3', 'language' => 'ru'];
        }
        $this->di->getShared('request')->headers['Authorization'] = 'Bearer t0k';
        $controller = new ModuleExtendedCDRController();
        $controller->checkAction();
        if (!$jwt) {
            $this->assertSame(401, $controller->response->status, '2024.1: only the session');
            return;
        }
        $this->assertSame(200, $controller->response->status);
        $this->assertSame(['anna', '201,202', 'ru'], [$controller->response->headers['X-Extcdr-User'],
            $controller->response->headers['X-Extcdr-Extensions'],
            $controller->response->headers['X-Extcdr-Language']]);
    }

    public function testOnAPbxOfACentralHistoryOnlyAdminsSeeTheOtherPbxsCalls(): void
    {
        $modules = sys_get_temp_dir() . '/extcdr-check-' . getmypid() . '-' . mt_rand();
        mkdir($modules . '/ModuleExtendedCDR/db', 0755, true);
        $this->di->set('config', new StubConfig(['core.modulesDir' => $modules]));
        try {
            $this->assertSame('', $this->check('anna', 'UsersUIRoleID3')['X-Extcdr-Pbxs'],
                'no settings: the only PBX of its history');
            file_put_contents($modules . '/ModuleExtendedCDR/db/extcdr.toml',
                "[module]\ndb = \"postgresql://extcdr@10.0.0.5/calls\"\n[pbx]\nid = \"office\"\n");
            $this->assertSame(['operator', 'office'], $this->roleAndPbxs('anna', 'UsersUIRoleID3'));
            $this->assertSame(['operator', 'office'], $this->roleAndPbxs('gleb', 'UsersUIRoleID6'));
            $this->assertSame(['supervisor', 'office'],
                $this->roleAndPbxs('dina', 'UsersUIRoleID7'));
            $this->assertSame(['admin', ''], $this->roleAndPbxs('admin', 'admins'));
        } finally {
            exec('rm -rf ' . escapeshellarg($modules));
        }
    }

    public function testTheSidebarPageLeadsToTheCalls(): void
    {
        $controller = new ModuleExtendedCDRController();
        $controller->indexAction();
        $this->assertTrue($controller->view->disabled);
        $this->assertSame('/admin-cabinet/module-extended-c-d-r/calls/', $controller->response->redirect);
    }

    private function roleAndPbxs(string $name, string $role): array
    {
        $headers = $this->check($name, $role);
        return [$headers['X-Extcdr-Role'], $headers['X-Extcdr-Pbxs']];
    }

    /** The check's headers for a user logged in as this platform logs in (not the language). */
    private function check(string $name, string $role): array
    {
        if ($this->di->has('jwt')) {
            $this->di->getShared('jwt')->refreshTokens['r-' . $name] = ['role' => $role, 'userName' => $name];
            $this->di->getShared('cookies')->values['refreshToken'] = 'r-' . $name;
        } else {
            $this->di->getShared('session')->values['authAdminCabinet'] = ['role' => $role,
                'userName' => $name, 'homePage' => '/admin-cabinet/extensions/index'];
        }
        $controller = new ModuleExtendedCDRController();
        $controller->checkAction();
        $this->assertSame(200, $controller->response->status);
        $this->assertTrue($controller->response->sent);
        $headers = $controller->response->headers;
        unset($headers['X-Extcdr-Language']);
        ksort($headers);
        $expected = ['X-Extcdr-Extensions', 'X-Extcdr-Pbxs', 'X-Extcdr-Role', 'X-Extcdr-Scope',
            'X-Extcdr-User'];
        $this->assertSame($expected, array_keys($headers));
        return array_merge(array_flip(['X-Extcdr-User', 'X-Extcdr-Role', 'X-Extcdr-Extensions',
            'X-Extcdr-Scope', 'X-Extcdr-Pbxs']), $headers);
    }
}

/** Another module's CDR restriction, in a form the check does not know. */
class OtherCdrFilter extends \MikoPBX\Modules\Config\ConfigClass
{
    public function applyACLFiltersToCDRQuery(array &$parameters, array $sessionContext = []): void
    {
        $parameters['conditions'] = "src_num LIKE '2%'";
    }
}
