"""Usage: the ledger of every accounted request (journal, shipper, table) and its reports."""
