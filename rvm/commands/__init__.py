"""The `rvm` command, one module per verb (as Optimum's `optimum/commands/`): each defines `add_arguments(parser)`
and `command(args)` and leaves the work to its layer below; `cli` is the entry point that registers them, `options`
the vocabulary all verbs share (one spelling per meaning)."""
