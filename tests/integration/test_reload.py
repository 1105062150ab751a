"""Settings-file reloads as deployments make them: a Kubernetes ConfigMap volume, where the
kubelet publishes a new version by swapping the directory's `..data` symlink (the file's own
name never appears in the change events), is picked up without a restart."""

import json
import os
import tempfile
import unittest

import hub


def settings(*names):
    return {"mcpServers": {n: {"command": hub.binary("mcphub-fixture"), "args": ["--name", n]}
                           for n in names}}


class ConfigMapVolumeTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.TemporaryDirectory()
        self.vol = self.dir.name
        self.publish("..2026_11_28_v1", settings("alpha"))
        os.symlink("..data/mcp_settings.json", os.path.join(self.vol, "mcp_settings.json"))
        self.ctl = hub.start_control(["--config", os.path.join(self.vol, "mcp_settings.json")])

    def tearDown(self):
        self.assertEqual(self.ctl.stop(), 0, self.ctl.log())
        hub.assert_no_children()
        self.dir.cleanup()

    def publish(self, version, doc):
        """What the kubelet does: a new timestamped directory, then ..data swapped to it."""
        os.mkdir(os.path.join(self.vol, version))
        with open(os.path.join(self.vol, version, "mcp_settings.json"), "w") as f:
            json.dump(doc, f)
        tmp = os.path.join(self.vol, "..data_tmp")
        os.symlink(version, tmp)
        os.rename(tmp, os.path.join(self.vol, "..data"))

    def test_symlink_swap_reloads(self):
        self.ctl.wait_line(r'msg="upstream started" server=alpha')
        self.publish("..2026_11_28_v2", settings("alpha", "beta"))
        self.ctl.wait_line(r'msg="configuration reloaded" trigger=\S+ .*servers=2', timeout=10)
        self.ctl.wait_line(r'msg="upstream started" server=beta')


if __name__ == "__main__":
    unittest.main()
