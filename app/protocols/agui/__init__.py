"""AG-UI (ag-ui-protocol 1.0): a team served to AG-UI clients, as a view of its runs' event logs."""
