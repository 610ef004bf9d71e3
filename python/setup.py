"""pip install ./python: the package remembers the checkout it came from, so serve.start() finds its `flotilla` command."""

import os

from setuptools import setup
from setuptools.command.build_py import build_py

CHECKOUT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class BuildWithCheckout(build_py):
    def run(self):
        super().run()
        with open(os.path.join(self.build_lib, "flotilla", "_checkout.py"), "w", encoding="utf-8") as file:
            file.write(f'"""Written by setup.py: the Flotilla checkout this package was installed from."""\n\nCHECKOUT = {CHECKOUT!r}\n')


setup(cmdclass={"build_py": BuildWithCheckout})
