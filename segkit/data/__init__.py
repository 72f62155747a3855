"""Datasets: MSD-layout tables with grades and splits, and the dataset makers."""
