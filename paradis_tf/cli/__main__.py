import sys

from paradis_tf.cli import main

sys.exit(main())
