"""biomed-vital: BioMed-VITAL recipes on the Hugging Face stack."""

__version__ = "0.1.0.dev0"
