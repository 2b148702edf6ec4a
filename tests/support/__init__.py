"""What every test directory shares: builders of realistic objects, polling, the cluster and operator rig."""
