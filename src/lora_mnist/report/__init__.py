"""What reporting adds, torch-free: metrics tables, plots and figures, weight-update spectra."""
