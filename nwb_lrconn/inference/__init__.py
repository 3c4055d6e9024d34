"""inference subpackage of nwb_lrconn."""
