<?php
// What both stub profiles share: the test's hold on Core's state (modules folder, DI services)
// and small recording stand-ins for Phalcon's view, response and session.

class StubCore
{
    /** @var string */
    public static $modulesDir = '/tmp';
    /** @var object */
    public static $di;
    /** @var array */
    public static $calls = [];
}

class StubDi
{
    /** @var array */
    private $services = [];

    public function set(string $name, $service): void
    {
        $this->services[$name] = $service;
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
