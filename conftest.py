"""The suite's pytest plugin is properties/plugin.py, registered through the ``pytest11`` entry point of
the installed package (its entry-point name is the module name). An uninstalled checkout loads it from
here; when the entry point already registered it under that name, pytest skips this (nothing twice)."""
pytest_plugins = ["properties.plugin"]
