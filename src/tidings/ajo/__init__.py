"""Adobe Journey Optimizer's Interactive Message Execution API, wire-compatible, over Tidings."""
