//! The CLI: `stint exec` and the main path through the `stint` commands.
