"""`python -m landslide_lit` is the same as the `landslide-lit` command."""

from landslide_lit.main import main

if __name__ == "__main__":
    main()
