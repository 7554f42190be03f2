"""PEFT tuners defined by hora: HoRA and DoRAN."""
