<?php
/*
 * ModuleExtendedCDR: who is asking for the pages, as the admin cabinet knows them, and which
 * calls they may see. The user and role come from Core's login (the PHP session on 2024.1; the
 * JWT service's refresh token or Bearer token on 2025+). What a restricted user sees is what
 * the PBX's own modules make of a CDR query for them (ModuleUsersUI's access groups): the
 * query's conditions after `applyACLFiltersToCDRQuery` are read back into a scope and a list
 * of extensions. A condition this class does not know shows nothing (fail closed).
 */

namespace Modules\ModuleExtendedCDR\Lib;

use MikoPBX\Common\Providers\PBXConfModulesProvider;
use MikoPBX\Modules\Config\CDRConfigInterface;

class Viewer
{
    /** Core's administrators (AclProvider::ROLE_ADMINS). */
    public const CORE_ADMINS = 'admins';

    /** ModuleUsersUI's filtered query, by its CDR filter mode, and our scope for each. */
    private const SCOPES = [
        '(src_num IN ({filteredExtensions:array}) OR dst_num IN ({filteredExtensions:array}))' => 'involved',
        'src_num IN ({filteredExtensions:array})' => 'placed',
        '(src_num NOT IN ({filteredExtensions:array}) AND dst_num NOT IN ({filteredExtensions:array}))' => 'except',
    ];

    /** @var string */
    public $name;
    /** @var string Core's role: 'admins', or a module's (ModuleUsersUI: UsersUIRoleID<group>) */
    public $coreRole;
    /** @var string */
    public $language;

    public function __construct(string $name, string $coreRole, string $language = '')
    {
        $this->name = $name;
        $this->coreRole = $coreRole;
        $this->language = $language;
    }

    /**
     * The logged-in user of this request, or null. `$di` is the controller's DI; `$session`,
     * `$cookies` and `$request` its services (null where the platform has none).
     */
    public static function ofRequest($di, $session, $cookies, $request): ?Viewer
    {
        if ($di !== null && $di->has('jwt')) {
            $viewer = self::ofJwt($di->getShared('jwt'), $cookies, $request);
            if ($viewer !== null) {
                return $viewer;
            }
        }
        if ($session !== null && $session->has('authAdminCabinet')) {
            $auth = $session->get('authAdminCabinet');
            if (is_array($auth) && (string)($auth['role'] ?? '') !== '') {
                return new self((string)($auth['userName'] ?? ''), (string)$auth['role']);
            }
        }
        return null;
    }

    /** 2025+: a Bearer token the JWT service validates, else the refresh token's session. */
    private static function ofJwt($jwt, $cookies, $request): ?Viewer
    {
        $header = $request !== null ? (string)$request->getHeader('Authorization') : '';
        if (strpos($header, 'Bearer ') === 0) {
            $claims = $jwt->validate(substr($header, 7));
            if (is_array($claims) && (string)($claims['role'] ?? '') !== '') {
                return new self((string)($claims['userId'] ?? ''), (string)$claims['role'],
                    (string)($claims['language'] ?? ''));
            }
        }
        if ($cookies === null || !$cookies->has('refreshToken')) {
            return null;
        }
        $token = (string)$cookies->get('refreshToken')->getValue();
        $role = $token === '' ? null : $jwt->extractRoleFromRefreshToken($token);
        if ($role === null || $role === '') {
            return null;
        }
        return new self((string)$jwt->extractUserIdFromRefreshToken($token), (string)$role);
    }

    /**
     * The headers nginx's lua block passes to the pages: user, role (admin / supervisor /
     * operator), the extensions and scope that limit an operator, language, and the PBXs
     * whose calls they see. `$pbx`: this PBX's id in a central history of several PBXs (''
     * for the only PBX of its history): there, anyone but Core's admins sees this PBX's
     * calls only — its access groups name its own employees — and admins every PBX's.
     */
    public function headers(string $pbx = ''): array
    {
        $headers = ['X-Extcdr-User' => $this->name, 'X-Extcdr-Language' => $this->language,
            'X-Extcdr-Extensions' => '', 'X-Extcdr-Scope' => '', 'X-Extcdr-Pbxs' => ''];
        if ($this->coreRole === self::CORE_ADMINS) {
            return $headers + ['X-Extcdr-Role' => 'admin'];
        }
        $headers['X-Extcdr-Pbxs'] = $pbx;
        $limit = $this->cdrLimit();
        if ($limit === null) {
            return $headers + ['X-Extcdr-Role' => 'supervisor'];
        }
        list($scope, $extensions) = $limit;
        $headers['X-Extcdr-Extensions'] = implode(',', $extensions);
        $headers['X-Extcdr-Scope'] = $scope;
        return $headers + ['X-Extcdr-Role' => 'operator'];
    }

    /**
     * [scope, extensions] when the PBX's modules restrict this user's CDR, null when not: a
     * CDR query as Core builds one, given to their `applyACLFiltersToCDRQuery` hooks.
     */
    private function cdrLimit(): ?array
    {
        $parameters = ['conditions' => '', 'bind' => []];
        $context = ['role' => $this->coreRole, 'user_name' => $this->name, 'session_id' => ''];
        PBXConfModulesProvider::hookModulesMethod(
            CDRConfigInterface::APPLY_ACL_FILTERS_TO_CDR_QUERY,
            [&$parameters, $context]
        );
        $conditions = preg_replace('/\s+/', ' ', trim((string)($parameters['conditions'] ?? '')));
        if ($conditions === '') {
            return null;
        }
        $scope = self::SCOPES[$conditions] ?? null;
        $numbers = $parameters['bind']['filteredExtensions'] ?? [];
        if ($scope === null || !is_array($numbers)) {
            return ['involved', []];        // '1=0' (nobody selected), or unknown: nothing
        }
        $extensions = [];
        foreach ($numbers as $number) {
            $number = (string)$number;
            if (preg_match('/^[0-9A-Za-z+*#_.-]+$/', $number) === 1) {
                $extensions[] = $number;
            }
        }
        return [$scope, $extensions];
    }
}
