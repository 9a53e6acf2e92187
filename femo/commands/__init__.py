"""One module per `femo` sub-command; see femo.cli."""
