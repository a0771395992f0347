<?php
/*
 * A stand-in of MikoPBX's admin cabinet for the end-to-end test through nginx (router of
 * `php -S`): a login as Core keeps it (2024.1: the PHP session's authAdminCabinet; 2025+: a
 * refreshToken cookie whose session the JWT service knows), and the module's own controller
 * answering the access check nginx's lua block captures, with a ModuleUsersUI-shaped module
 * enabled beside it whose access groups are in EXTCDR_GROUPS (JSON); EXTCDR_MODULES: Core's
 * modules folder, where the module's settings are (this PBX's id in a central history).
 *
 *   GET /login?user=<name>&role=<Core role>   log in (302 to /)
 *   GET /auth                                 the module's check (nginx proxies its URL here)
 */
$profile = getenv('EXTCDR_CORE_PROFILE') ?: '2026.1';
require __DIR__ . '/bootstrap.php';

use Modules\ModuleExtendedCDR\App\Controllers\ModuleExtendedCDRController;
use Modules\ModuleUsersUI\Lib\UsersUIConf;

$tokens = getenv('EXTCDR_TOKENS');             // refresh token => session data (2025+)
$path = parse_url($_SERVER['REQUEST_URI'], PHP_URL_PATH);

if ($path === '/login') {
    $user = ['role' => (string)($_GET['role'] ?? ''), 'userName' => (string)($_GET['user'] ?? '')];
    if ($profile === '2024.1') {
        session_start();
        $_SESSION['authAdminCabinet'] = $user;
    } else {
        $token = bin2hex(random_bytes(16));
        $known = json_decode((string)@file_get_contents($tokens), true) ?: [];
        $known[$token] = $user;
        file_put_contents($tokens, json_encode($known), LOCK_EX);
        setcookie('refreshToken', $token, 0, '/');
    }
    header('Location: /', true, 302);
    return true;
}
if ($path !== '/auth') {
    http_response_code(404);
    return true;
}

$di = StubCore::$di = new StubDi();
$cookies = new StubCookies();
$cookies->values = $_COOKIE;
$di->set('cookies', $cookies);
$request = new StubRequest();
$request->headers['Authorization'] = $_SERVER['HTTP_AUTHORIZATION'] ?? '';
$di->set('request', $request);
if ($profile === '2024.1') {
    session_start();
    $session = new StubSession();
    $session->values = $_SESSION;
    $di->set('session', $session);
} else {
    $jwt = new StubJwt();
    $jwt->refreshTokens = json_decode((string)@file_get_contents($tokens), true) ?: [];
    $di->set('jwt', $jwt);
}
if (getenv('EXTCDR_MODULES')) {                // Core's modules folder: the module's settings
    $di->set('config', new StubConfig(['core.modulesDir' => getenv('EXTCDR_MODULES')]));
}
UsersUIShaped::$groups = json_decode((string)file_get_contents(getenv('EXTCDR_GROUPS')), true);
StubCore::$modules = [new UsersUIConf()];

$controller = new ModuleExtendedCDRController();
$controller->checkAction();
http_response_code($controller->response->status);
foreach ($controller->response->headers as $name => $value) {
    header("{$name}: {$value}");
}
return true;
