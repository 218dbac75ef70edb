"""Prints the zoo table of README.md, computed from the presets."""

from absl import app

from tfplm.models.presets import zoo_table


def main(argv):
    del argv
    print(zoo_table())


if __name__ == "__main__":
    app.run(main)
