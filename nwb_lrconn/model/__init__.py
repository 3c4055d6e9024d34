"""model room of nwb_lrconn."""
