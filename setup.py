import os

from setuptools import find_packages, setup

here = os.path.abspath(os.path.dirname(__file__))
with open(os.path.join(here, "README.rst")) as f:
    README = f.read()

requires = [
    "alembic>=1.13",
    "colander>=2.0",
    "cornice>=6.0",
    "cornice_swagger>=1.0",
    "cryptography>=42",
    "limits>=3.13",
    "orjson>=3.9",
    "plaster_pastedeploy",
    "psycopg[binary]>=3.1",
    "pyramid>=2.0",
    "pyramid_retry>=2.1",
    "pyramid_tm>=2.5",
    "redis>=5",
    "requests>=2.31",
    "SQLAlchemy>=2.0",
    "transaction>=4",
    "waitress>=3",
    "zope.sqlalchemy>=3.1",
]

tests_require = [
    "gunicorn>=23",
    "hypothesis>=6",
    "pytest>=8",
    "pytest-cov",
    "ruff",
    "schemathesis>=3.30",
    "WebTest>=3",
]

setup(
    name="fxchat",
    version="0.1.0",
    description="End-to-end-encrypted chat relay server, crypto suite and reference client",
    long_description=README,
    classifiers=[
        "Programming Language :: Python :: 3",
        "Framework :: Pyramid",
        "Topic :: Internet :: WWW/HTTP :: WSGI :: Application",
    ],
    packages=find_packages(exclude=["tests", "tests.*"]),
    include_package_data=True,
    zip_safe=False,
    python_requires=">=3.10",
    install_requires=requires,
    extras_require={"testing": tests_require},
    entry_points={
        "paste.app_factory": ["main = fxchat:main"],
        "console_scripts": [
            "fxchat = fxchat.client.cli:main",
            "fxchat-purge = fxchat.scripts.purge:main",
        ],
    },
)
