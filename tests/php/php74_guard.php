<?php
// A PHP 7.4 syntax guard (Debian has no PHP 7.4 to lint with): parses each file given with
// php-ast and names every construct PHP 7.4 cannot parse or run. Prints one line per finding;
// exit 1 when there is any. Usage: php php74_guard.php FILE...

use ast\Node;
use ast\flags;

function findings(Node $node, string $file, array &$found): void
{
    $newer = [
        ast\AST_MATCH => 'match (8.0)',
        ast\AST_NULLSAFE_PROP => '?-> (8.0)',
        ast\AST_NULLSAFE_METHOD_CALL => '?-> (8.0)',
        ast\AST_NAMED_ARG => 'a named argument (8.0)',
        ast\AST_ATTRIBUTE_LIST => 'an attribute (8.0)',
        ast\AST_TYPE_UNION => 'a union type (8.0)',
        ast\AST_TYPE_INTERSECTION => 'an intersection type (8.1)',
        ast\AST_CALLABLE_CONVERT => 'first-class callable syntax (8.1)',
    ];
    $where = "{$file}:{$node->lineno}";
    if (isset($newer[$node->kind])) {
        $found[] = "{$where}: {$newer[$node->kind]}";
    }
    if ($node->kind === ast\AST_CLASS && ($node->flags & flags\CLASS_ENUM)) {
        $found[] = "{$where}: an enum (8.1)";
    }
    if ($node->kind === ast\AST_PARAM && ($node->flags & (flags\PARAM_MODIFIER_PUBLIC
            | flags\PARAM_MODIFIER_PROTECTED | flags\PARAM_MODIFIER_PRIVATE))) {
        $found[] = "{$where}: a promoted constructor parameter (8.0)";
    }
    if (in_array($node->kind, [ast\AST_PROP_GROUP, ast\AST_PARAM, ast\AST_CLASS], true)
            && ($node->flags & flags\MODIFIER_READONLY)) {
        $found[] = "{$where}: readonly (8.1)";
    }
    if ($node->kind === ast\AST_TYPE && in_array($node->flags,
            [flags\TYPE_MIXED, flags\TYPE_NEVER, flags\TYPE_STATIC], true)) {
        $found[] = "{$where}: the type mixed, never or static (8.0+)";
    }
    if ($node->kind === ast\AST_CATCH && $node->children['var'] === null) {
        $found[] = "{$where}: a catch without a variable (8.0)";
    }
    foreach ($node->children as $child) {
        if ($child instanceof Node) {
            findings($child, $file, $found);
        }
    }
}

/** A trailing comma before `)` of a parameter or `use` list: a parse error before 8.0. */
function trailing_commas(string $code, string $file, array &$found): void
{
    $tokens = array_values(array_filter(token_get_all($code), function ($t) {
        return !is_array($t) || !in_array($t[0], [T_WHITESPACE, T_COMMENT, T_DOC_COMMENT], true);
    }));
    $stack = [];
    $line = 1;
    foreach ($tokens as $i => $token) {
        if (is_array($token)) {
            $line = $token[2];
        }
        if ($token === '(') {
            $before = $tokens[$i - 1] ?? null;
            $before2 = $tokens[$i - 2] ?? null;
            $declares = (is_array($before) && in_array($before[0], [T_FUNCTION, T_FN, T_USE], true))
                || (is_array($before2) && in_array($before2[0], [T_FUNCTION], true));
            $stack[] = $declares;
        } elseif ($token === ')') {
            $declares = array_pop($stack);
            if ($declares && ($tokens[$i - 1] ?? null) === ',') {
                $found[] = "{$file}:{$line}: a trailing comma in a parameter list (8.0)";
            }
        }
    }
}

$found = [];
foreach (array_slice($argv, 1) as $file) {
    $code = file_get_contents($file);
    try {
        findings(ast\parse_code($code, 90), $file, $found);
    } catch (ParseError $e) {
        $found[] = "{$file}:{$e->getLine()}: does not parse: {$e->getMessage()}";
    }
    trailing_commas($code, $file, $found);
}
foreach ($found as $line) {
    echo $line, "\n";
}
exit($found ? 1 : 0);
