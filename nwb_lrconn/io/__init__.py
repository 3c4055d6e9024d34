"""io room of nwb_lrconn."""
