<?php
// What both stub profiles share: the test's hold on Core's state (modules folder, DI services)
// and small recording stand-ins for Phalcon's view, response and session.

class StubCore
{
    /** @var string */
    public static $modulesDir = '/tmp';
    /** @var object */
    public static $di;
    /** @var object[] the enabled modules' Conf objects (PBXConfModulesProvider's hooks) */
    public static $modules = [];

    /** Core's DI for a stand-in PBX folder: its config paths, a licence service. */
    public static function ofPbx(string $root): StubDi
    {
        $root = rtrim($root, '/');
        self::$modulesDir = "{$root}/custom_modules";
        self::$di = new StubDi();
        self::$di->set('config', new StubConfig([
            'core.modulesDir' => "{$root}/custom_modules",
            'core.logsDir' => "{$root}/logs",
            'database.dbfile' => "{$root}/mikopbx.db",
            'cdrDatabase.dbfile' => "{$root}/cdr.db",
            'asterisk.monitordir' => "{$root}/monitor",
        ]));
        self::$di->set('license', new StubLicence());
        return self::$di;
    }
}

class StubDi
{
    /** @var array */
    private $services = [];

    public function set(string $name, $service): void
    {
        $this->services[$name] = $service;
    }

    public function has(string $name): bool
    {
        return array_key_exists($name, $this->services);
    }

    public function getShared(string $name)
    {
        return $this->services[$name];
    }
}

class StubLicence
{
    /** @var array feature id => available */
    public $features = [];

    public function featureAvailable(int $feature): array
    {
        return ['success' => $this->features[$feature] ?? false];
    }
}

class StubView
{
    public $disabled = false;

    public function disable(): void
    {
        $this->disabled = true;
    }
}

class StubResponse
{
    public $status = 200;
    public $headers = [];
    public $redirect = null;
    public $sent = false;

    public function setStatusCode(int $code, ?string $message = null)
    {
        $this->status = $code;
        return $this;
    }

    public function setHeader(string $name, $value)
    {
        $this->headers[$name] = $value;
        return $this;
    }

    public function redirect($location = null, bool $externalRedirect = false, int $statusCode = 302)
    {
        $this->redirect = $location;
        return $this;
    }

    public function send()
    {
        $this->sent = true;
        return $this;
    }
}

class StubSession
{
    public $values = [];

    public function has(string $key): bool
    {
        return array_key_exists($key, $this->values);
    }

    public function get(string $key, $default = null)
    {
        return $this->values[$key] ?? $default;
    }
}

class StubCookie
{
    private $value;

    public function __construct(string $value)
    {
        $this->value = $value;
    }

    public function getValue()
    {
        return $this->value;
    }
}

class StubCookies
{
    public $values = [];

    public function has(string $name): bool
    {
        return array_key_exists($name, $this->values);
    }

    public function get(string $name): StubCookie
    {
        return new StubCookie($this->values[$name] ?? '');
    }
}

class StubRequest
{
    public $headers = [];

    public function getHeader(string $name): string
    {
        return $this->headers[$name] ?? '';
    }
}

// Core 2025+'s `jwt` service: tokens it knows (a refresh token's session lives in Redis there).
class StubJwt
{
    /** @var array refresh token => session data (role, userName) */
    public $refreshTokens = [];
    /** @var array access token => claims (userId, role, language) */
    public $accessTokens = [];

    public function validate(string $token): ?array
    {
        return $this->accessTokens[$token] ?? null;
    }

    public function extractRoleFromRefreshToken(string $refreshToken): ?string
    {
        return $this->refreshTokens[$refreshToken]['role'] ?? null;
    }

    public function extractUserIdFromRefreshToken(string $refreshToken): ?string
    {
        return $this->refreshTokens[$refreshToken]['userName'] ?? null;
    }
}

// Core's `config` service (Phalcon\Config over mikopbx-settings.json): `path('a.b')`.
class StubConfig
{
    /** @var array dotted path => value */
    public $values = [];

    public function __construct(array $values)
    {
        $this->values = $values;
    }

    public function path(string $path, $default = null)
    {
        return $this->values[$path] ?? $default;
    }
}
