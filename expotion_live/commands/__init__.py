"""Every subcommand: its parser and its handler, one module each (`cli` wires them).

A handler takes the parsed flags and the Settings, turns flags into settings overrides,
calls the domain packages and returns an exit code; every expected failure is one line on
stderr that says what to do. Shared flags and argparse types are in `common`; no domain
package imports argparse.
"""
