<?php
return [
    'BreadcrumbModuleExtendedCDR' => 'Расширенная история звонков',
    'SubHeaderModuleExtendedCDR'  => 'Каждый звонок разобран: входящие, исходящие, пропущенные, перезвоны; фильтры, Excel, отчёты',
    'mo_ModuleExtendedCDR'        => 'Расширенная история звонков',
];
