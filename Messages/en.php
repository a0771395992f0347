<?php
return [
    'BreadcrumbModuleExtendedCDR' => 'Extended call history',
    'SubHeaderModuleExtendedCDR'  => 'Every call classified: incoming, outgoing, missed, called back; filters, Excel, reports',
    'mo_ModuleExtendedCDR'        => 'Extended call history',
];
