"""Settings every dfmvr command shares (one home: each command declares them, so they hold whether it
runs under ``dfmvr`` or as its own entry point such as ``dfmvr-train``)."""

HELP_SETTINGS = {"help_option_names": ["-h", "--help"]}
