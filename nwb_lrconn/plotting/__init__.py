"""plotting room of nwb_lrconn."""
