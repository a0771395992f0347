"""What a step of the module's life on a PBX can say went wrong, readable as it is (the
command line prints it in one line, the admin panel shows it)."""


class LifecycleError(Exception):
    """A step that cannot be done; the message says why and what to do."""


class MarketplaceError(Exception):
    """The marketplace could not be asked, or said no; the message says which."""
