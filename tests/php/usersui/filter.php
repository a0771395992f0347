<?php
// ModuleUsersUI's CDR filter (mikopbx/ModuleUsersUI Lib/UsersUICDRFilter.php) over access
// groups held here instead of its tables: the conditions and binds exactly as it writes them.

class UsersUIShaped
{
    /** @var array group id => ['cdrFilterMode' => ..., 'fullAccess' => '0'|'1', 'extensions' => [...]] */
    public static $groups = [];

    public static function applyCDRFilterRules(string $accessGroupId, array &$cdrRequestParameters): void
    {
        $accessGroup = self::$groups[$accessGroupId] ?? null;
        if ($accessGroup === null || $accessGroup['fullAccess'] === '1') {
            return;
        }
        $cdrFilterMode = $accessGroup['cdrFilterMode'];
        if ($cdrFilterMode === 'all') {
            return;
        }
        $filteredExtensions = $accessGroup['extensions'];
        if (count($filteredExtensions) > 0) {
            $oldConditions = $cdrRequestParameters['conditions'];
            $cdrRequestParameters['bind']['filteredExtensions'] = $filteredExtensions;
            if ($cdrFilterMode === 'selected') {
                $cdrRequestParameters['conditions'] = '(src_num IN ({filteredExtensions:array}) OR dst_num IN ({filteredExtensions:array}))';
            } elseif ($cdrFilterMode === 'outgoing-selected') {
                $cdrRequestParameters['conditions'] = 'src_num IN ({filteredExtensions:array})';
            } elseif ($cdrFilterMode === 'not-selected') {
                $cdrRequestParameters['conditions'] = '(src_num NOT IN ({filteredExtensions:array}) AND dst_num NOT IN ({filteredExtensions:array}))';
            }
            if (!empty($oldConditions)) {
                $cdrRequestParameters['conditions'] .= ' AND (' . $oldConditions . ')';
            }
        } elseif ($cdrFilterMode === 'selected') {
            $cdrRequestParameters['conditions'] = '1=0';
        }
    }

    /** The access group of a ModuleUsersUI role ('UsersUIRoleID<id>'), or null. */
    public static function groupOf(?string $role): ?string
    {
        if ($role === null) {
            return null;
        }
        $id = str_replace('UsersUIRoleID', '', $role);
        return ($id !== '' && $id !== $role) ? $id : null;
    }
}
