"""The verbs of the `rvm` command that have no job module of their own to carry their arguments: each module
defines `add_arguments(parser)` and `command(args)`, as every verb's module does (see `rvm.cli.VERBS`).
`options` is the vocabulary all verbs share: one spelling per meaning."""
