"""inference room of nwb_lrconn."""
