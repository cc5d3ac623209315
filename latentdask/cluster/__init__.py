"""Where the work runs: cluster specs (YAML), connecting a client, certificates for mutual TLS."""
