"""Several ways of saying each task, written for lwd: training phrasings and held-out ones.

A policy trained on one sentence per task learns one embedding per task, not language:
reworded MT10 instructions cost it 0.10 average success (docs/benchmarks.md). So every
task has several training phrasings (varied verbs, synonyms, word order, terse and
polite forms) that simulated robots draw from, one per episode, and a disjoint held-out
set that never enters training data and only measures how well the policy follows
wording it has not seen. The held-out sets deliberately use other templates as well as
other words: a "Could you ...?" question (training uses "Please ..."), a terse noun
phrase, and a sentence with rarer synonyms.

The canonical sentence (`TaskSpec.instruction`: METAWORLD_INSTRUCTIONS, or the chain's
instruction in LONG_HORIZON_TASKS) is always the first training phrasing; the tables
below hold only the extra ones. Chains are keyed by chain name in their own table so the
chain definitions can change without touching this file; a task with no entry here has
its canonical sentence as its only phrasing.

Kept free of MuJoCo imports: the data layer validates episode instructions with it.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from functools import cache
from typing import Literal

import numpy as np

from lwd.envs.tasks import task_spec

PhrasingSet = Literal["canonical", "train", "heldout"]
PHRASING_SETS: tuple[str, ...] = ("canonical", "train", "heldout")

# task -> (extra training phrasings, held-out phrasings)
METAWORLD_PHRASINGS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "assembly-v3": (
        (
            "Grab the nut and slide it onto the peg.",
            "Put the nut onto the peg.",
            "Place the ring nut over the peg.",
            "Please fit the nut onto the peg.",
            "Take the nut and drop it over the peg.",
            "Assemble the nut onto the peg.",
        ),
        ("Thread the ring down around the post.", "Could you mount the nut on the peg?", "Nut goes on the peg."),
    ),
    "basketball-v3": (
        (
            "Pick up the ball and put it through the hoop.",
            "Dunk the ball in the basket.",
            "Score a basket with the ball.",
            "Lift the ball and drop it into the hoop.",
            "Please put the ball through the hoop.",
            "Take the ball and slam dunk it.",
        ),
        ("Shoot the basketball into the net.", "Could you get the ball in the basket?", "Ball into the hoop."),
    ),
    "bin-picking-v3": (
        (
            "Pick the cube out of the left bin and drop it in the right bin.",
            "Transfer the cube to the right bin.",
            "Take the block from one bin to the other.",
            "Put the cube into the right-hand bin.",
            "Please move the cube over to the right bin.",
            "Lift the cube out of its bin and place it in the other bin.",
        ),
        (
            "Relocate the small block into the container on the right.",
            "Could you carry the cube across to the second bin?",
            "Cube from left bin to right bin.",
        ),
    ),
    "box-close-v3": (
        (
            "Close the box with its lid.",
            "Place the lid on top of the box.",
            "Put the lid back on the box.",
            "Grab the lid and cover the box.",
            "Please close the box.",
            "Lift the lid and set it onto the box.",
        ),
        ("Cap the container with its cover.", "Could you shut the box by putting its top on?", "Lid on the box."),
    ),
    "button-press-topdown-v3": (
        (
            "Push the button from the top.",
            "Press down on the button.",
            "Push the top button down.",
            "From above, press the button.",
            "Please press the button downward.",
            "Tap the button down from overhead.",
        ),
        (
            "Hit the button vertically from above it.",
            "Could you push down on that button from the top?",
            "Button, press from above.",
        ),
    ),
    "button-press-topdown-wall-v3": (
        (
            "Press the button behind the wall from above.",
            "Reach over the wall and push the button down.",
            "Get over the wall and press the button from the top.",
            "Please press the button down past the wall.",
            "Go over the barrier and press the button down.",
            "Press down on the button on the other side of the wall.",
        ),
        (
            "Lean across the barrier and hit the button from overhead.",
            "Could you press the walled-off button from the top?",
            "Over the wall, button down.",
        ),
    ),
    "button-press-v3": (
        (
            "Press the button from the front.",
            "Push the front button in.",
            "Press the button straight in.",
            "Please push the button forward.",
            "From the front, press the button in.",
            "Poke the button in horizontally.",
        ),
        ("Hit the button head-on.", "Could you press in the button that faces you?", "Button in, from the front."),
    ),
    "button-press-wall-v3": (
        (
            "Press the button behind the wall from the front.",
            "Get around the wall and press the button in.",
            "Go past the wall and push the button.",
            "Please push the button in behind the wall.",
            "Reach past the barrier and press the button in.",
            "Push in the button that the wall hides.",
        ),
        (
            "Work around the barrier and hit the button head-on.",
            "Could you press in the button behind the wall?",
            "Around the wall, button in.",
        ),
    ),
    "coffee-button-v3": (
        (
            "Push the coffee machine's button.",
            "Start the coffee machine.",
            "Press the coffee maker's button.",
            "Please press the button on the coffee maker.",
            "Turn on the coffee machine with its button.",
            "Hit the button to brew coffee.",
        ),
        ("Switch the espresso maker on.", "Could you push the brew button?", "Coffee machine, press the button."),
    ),
    "coffee-pull-v3": (
        (
            "Take the mug out from under the coffee machine.",
            "Slide the mug back towards you from the coffee machine.",
            "Pull the cup out of the coffee machine.",
            "Please pull the mug away from the machine.",
            "Drag the mug away from the coffee maker.",
            "Move the mug out from the coffee machine to the goal.",
        ),
        (
            "Retrieve the cup from beneath the espresso maker.",
            "Could you draw the mug back from the coffee maker?",
            "Mug out of the coffee machine.",
        ),
    ),
    "coffee-push-v3": (
        (
            "Push the mug under the coffee machine.",
            "Put the cup under the coffee maker.",
            "Slide the cup beneath the coffee machine.",
            "Please push the mug into the coffee machine.",
            "Move the mug under the spout of the coffee machine.",
            "Shove the mug over to the coffee machine.",
        ),
        (
            "Position the cup below the espresso maker's nozzle.",
            "Could you nudge the mug in under the coffee maker?",
            "Mug under the coffee machine.",
        ),
    ),
    "dial-turn-v3": (
        (
            "Rotate the dial a quarter turn.",
            "Turn the knob by a quarter.",
            "Twist the dial.",
            "Please rotate the dial.",
            "Spin the dial a quarter of the way round.",
            "Turn the dial to the goal.",
        ),
        ("Crank the round knob ninety degrees.", "Could you give the dial a quarter twist?", "Dial, quarter turn."),
    ),
    "disassemble-v3": (
        (
            "Take the nut off the peg.",
            "Pull the nut up off the peg.",
            "Remove the nut from the peg.",
            "Please lift the nut away from the peg.",
            "Disassemble the nut from the peg.",
            "Grab the nut and pull it off the peg.",
        ),
        ("Raise the ring clear of the post.", "Could you free the nut from the peg?", "Nut off the peg."),
    ),
    "door-close-v3": (
        (
            "Close the door.",
            "Shut the door.",
            "Push the door shut.",
            "Please close the door.",
            "Swing the door shut.",
            "Push the door until it closes.",
        ),
        ("Bring the open door back into its frame.", "Could you shut that door?", "Door closed."),
    ),
    "door-lock-v3": (
        (
            "Lock the door.",
            "Turn the lock on the door down.",
            "Push the door lock down.",
            "Please lock the door.",
            "Twist the door lock downwards.",
            "Rotate the lock down to lock the door.",
        ),
        ("Secure the door by flipping the latch down.", "Could you lock the door for me?", "Door locked."),
    ),
    "door-open-v3": (
        (
            "Open the door.",
            "Pull the door open.",
            "Grab the handle and open the door.",
            "Please open the door.",
            "Swing the door open using the handle.",
            "Pull on the door handle to open the door.",
        ),
        ("Yank the door ajar by the knob.", "Could you open that door?", "Door open."),
    ),
    "door-unlock-v3": (
        (
            "Unlock the door.",
            "Turn the lock on the door up.",
            "Push the door lock up.",
            "Please unlock the door.",
            "Twist the door lock upwards.",
            "Rotate the lock up to unlock the door.",
        ),
        ("Release the door by flipping the latch up.", "Could you unlock the door for me?", "Door unlocked."),
    ),
    "drawer-close-v3": (
        (
            "Close the drawer.",
            "Shut the drawer.",
            "Push the drawer closed.",
            "Please close the drawer.",
            "Slide the drawer shut.",
            "Push the drawer all the way in.",
        ),
        ("Slam the drawer back into the cabinet.", "Could you shut that drawer?", "Drawer closed."),
    ),
    "drawer-open-v3": (
        (
            "Open the drawer.",
            "Pull out the drawer.",
            "Slide the drawer open.",
            "Please open the drawer.",
            "Grab the handle and pull the drawer out.",
            "Pull the drawer towards you.",
        ),
        ("Draw the drawer out of the cabinet.", "Could you open that drawer?", "Drawer open."),
    ),
    "faucet-close-v3": (
        (
            "Turn off the faucet.",
            "Close the tap.",
            "Rotate the faucet handle to shut the water off.",
            "Please turn the tap off.",
            "Twist the faucet closed.",
            "Shut off the faucet.",
        ),
        ("Stop the water by swinging the spigot lever.", "Could you turn off the tap?", "Faucet off."),
    ),
    "faucet-open-v3": (
        (
            "Turn on the faucet.",
            "Open the tap.",
            "Rotate the faucet handle to let the water run.",
            "Please turn the tap on.",
            "Twist the faucet open.",
            "Start the faucet.",
        ),
        ("Get the water running by swinging the spigot lever.", "Could you turn on the tap?", "Faucet on."),
    ),
    "hammer-v3": (
        (
            "Hammer the nail into the wall.",
            "Use the hammer to knock the nail in.",
            "Grab the hammer and hit the nail.",
            "Please hammer the nail in.",
            "Take the hammer and pound the nail into the wall.",
            "Drive the nail in with the hammer.",
        ),
        ("Whack the peg flush using the mallet.", "Could you nail that in with the hammer?", "Hammer, nail, wall."),
    ),
    "hand-insert-v3": (
        (
            "Insert your hand into the hole.",
            "Reach into the hole in the table.",
            "Move your gripper into the hole.",
            "Please put your hand in the hole.",
            "Push your hand down into the table's hole.",
            "Place your hand inside the hole.",
        ),
        (
            "Lower the gripper into the opening in the tabletop.",
            "Could you stick your hand in the hole?",
            "Hand in the hole.",
        ),
    ),
    "handle-press-side-v3": (
        (
            "Push the handle down from the side.",
            "From the side, press the handle down.",
            "Press down on the side handle.",
            "Please push the sideways handle down.",
            "Push the lever on the side down.",
            "Press the side-mounted handle downwards.",
        ),
        (
            "Force the handle to the bottom, approaching from its flank.",
            "Could you push that side handle down?",
            "Side handle, down.",
        ),
    ),
    "handle-press-v3": (
        (
            "Push the handle down.",
            "Press down on the handle.",
            "Push the handle to the bottom.",
            "Please press the handle down.",
            "Push down the handle in front of you.",
            "Press the handle downwards.",
        ),
        ("Force the handle all the way to the bottom.", "Could you push down that handle?", "Handle down."),
    ),
    "handle-pull-side-v3": (
        (
            "Lift the handle up from the side.",
            "From the side, pull the handle up.",
            "Pull up on the side handle.",
            "Please pull the sideways handle up.",
            "Pull the lever on the side up.",
            "Raise the side-mounted handle.",
        ),
        (
            "Haul the handle to the top, approaching from its flank.",
            "Could you lift that side handle up?",
            "Side handle, up.",
        ),
    ),
    "handle-pull-v3": (
        (
            "Lift the handle up.",
            "Pull up on the handle.",
            "Raise the handle.",
            "Please pull the handle up.",
            "Pull the handle in front of you upwards.",
            "Pull the handle to the top.",
        ),
        ("Haul the handle all the way up.", "Could you lift that handle?", "Handle up."),
    ),
    "lever-pull-v3": (
        (
            "Lift the lever.",
            "Raise the lever.",
            "Pull up on the lever.",
            "Please pull the lever up.",
            "Swing the lever upwards.",
            "Pull the lever all the way up.",
        ),
        ("Flip the arm of the lever to the top.", "Could you raise that lever?", "Lever up."),
    ),
    "peg-insert-side-v3": (
        (
            "Insert the peg into the hole from the side.",
            "Grab the peg and push it into the hole.",
            "Put the peg in the hole sideways.",
            "Please slide the peg into the hole.",
            "Take the peg and plug it into the side hole.",
            "Pick up the peg and fit it into the hole in the box.",
        ),
        (
            "Lift the stick and thread it horizontally into the opening.",
            "Could you plug the peg into that hole?",
            "Peg into the hole.",
        ),
    ),
    "peg-unplug-side-v3": (
        (
            "Pull the peg out of the box.",
            "Remove the peg from the side hole.",
            "Take the peg out sideways.",
            "Please unplug the peg.",
            "Grab the peg and pull it out of the hole.",
            "Slide the peg out of the box.",
        ),
        ("Extract the stick from the opening in the block.", "Could you yank that peg out?", "Peg out of the box."),
    ),
    "pick-out-of-hole-v3": (
        (
            "Pick the block out of the hole.",
            "Take the block out of the hole.",
            "Grab the block and lift it out of the hole.",
            "Please remove the block from the hole.",
            "Pull the block up out of the hole.",
            "Lift the block up from the hole to the goal.",
        ),
        ("Fish the object up from the pit.", "Could you get the block out of that hole?", "Block out of the hole."),
    ),
    "pick-place-v3": (
        (
            "Put the puck at the goal.",
            "Grab the puck and move it to the goal.",
            "Pick the puck up and set it down at the target.",
            "Please place the puck at the goal.",
            "Lift the puck and bring it to the goal position.",
            "Carry the puck to the goal.",
        ),
        (
            "Transport the disc through the air to the target spot.",
            "Could you lift the puck over to the target?",
            "Puck, pick and place.",
        ),
    ),
    "pick-place-wall-v3": (
        (
            "Put the puck at the goal behind the wall.",
            "Lift the puck over the wall to the goal.",
            "Grab the puck and carry it past the wall to the target.",
            "Please place the puck behind the wall.",
            "Pick the puck up and set it down beyond the wall.",
            "Carry the puck over the wall to the goal.",
        ),
        (
            "Transport the disc across the barrier to the target spot.",
            "Could you move the puck over the wall to the target?",
            "Puck over the wall, to the goal.",
        ),
    ),
    "plate-slide-back-side-v3": (
        (
            "Pull the plate out of the cabinet sideways.",
            "Slide the plate out of the cabinet from the side.",
            "Take the plate out of the cabinet sideways.",
            "Please slide the plate back out sideways.",
            "Move the plate sideways out of the cabinet.",
            "Drag the plate out of the cabinet to the side.",
        ),
        (
            "Withdraw the dish laterally from the cupboard.",
            "Could you get the plate out of the cabinet sideways?",
            "Plate out, sideways.",
        ),
    ),
    "plate-slide-back-v3": (
        (
            "Pull the plate out of the cabinet.",
            "Slide the plate out of the cabinet.",
            "Take the plate back out of the cabinet.",
            "Please slide the plate out.",
            "Move the plate out of the cabinet.",
            "Drag the plate back out of the cabinet.",
        ),
        ("Withdraw the dish from the cupboard.", "Could you get the plate out of the cabinet?", "Plate out."),
    ),
    "plate-slide-side-v3": (
        (
            "Push the plate into the cabinet sideways.",
            "Slide the plate into the cabinet from the side.",
            "Put the plate in the cabinet sideways.",
            "Please slide the plate in sideways.",
            "Move the plate sideways into the cabinet.",
            "Shove the plate into the cabinet from the side.",
        ),
        (
            "Insert the dish laterally into the cupboard.",
            "Could you get the plate into the cabinet sideways?",
            "Plate in, sideways.",
        ),
    ),
    "plate-slide-v3": (
        (
            "Push the plate into the cabinet.",
            "Slide the plate in.",
            "Put the plate in the cabinet.",
            "Please slide the plate into the cabinet.",
            "Move the plate into the cabinet.",
            "Shove the plate into the cabinet.",
        ),
        ("Insert the dish into the cupboard.", "Could you get the plate into the cabinet?", "Plate in."),
    ),
    "push-back-v3": (
        (
            "Push the puck back to the goal.",
            "Slide the puck backwards to the target.",
            "Move the puck back to the goal by pushing it.",
            "Please push the puck backwards.",
            "Shove the puck back towards the goal.",
            "Nudge the puck backwards until it reaches the goal.",
        ),
        (
            "Drive the disc in reverse over to the target spot.",
            "Could you push that puck back to the target?",
            "Puck back to the goal.",
        ),
    ),
    "push-v3": (
        (
            "Slide the puck to the goal.",
            "Push the puck over to the target.",
            "Shove the puck to the goal.",
            "Please push the puck to the goal.",
            "Move the puck to the goal by pushing it.",
            "Nudge the puck along the table to the goal.",
        ),
        (
            "Drive the disc across the table to the target spot.",
            "Could you slide that puck to the target?",
            "Puck along the table to the goal.",
        ),
    ),
    "push-wall-v3": (
        (
            "Slide the puck around the wall to the goal.",
            "Push the puck past the wall to the target.",
            "Get the puck around the wall to the goal.",
            "Please push the puck around the wall.",
            "Shove the puck around the wall to the goal.",
            "Move the puck past the wall by pushing it.",
        ),
        (
            "Drive the disc around the barrier to the target spot.",
            "Could you slide that puck around the wall?",
            "Puck around the wall.",
        ),
    ),
    "reach-v3": (
        (
            "Reach the goal.",
            "Move the gripper to the goal.",
            "Go to the goal position.",
            "Please reach for the goal.",
            "Put your hand at the goal.",
            "Bring your hand to the target.",
        ),
        ("Position the end effector over the target point.", "Could you touch the target spot?", "Hand to the goal."),
    ),
    "reach-wall-v3": (
        (
            "Reach the goal behind the wall.",
            "Move your hand over the wall to the goal.",
            "Go over the wall to the goal position.",
            "Please reach over the wall.",
            "Put your hand at the goal past the wall.",
            "Bring the gripper over the wall to the target.",
        ),
        (
            "Position the end effector beyond the barrier at the target point.",
            "Could you reach across the wall to the target?",
            "Hand over the wall to the goal.",
        ),
    ),
    "shelf-place-v3": (
        (
            "Place the block on the shelf.",
            "Put the block up on the shelf.",
            "Grab the block and set it on the shelf.",
            "Please put the block on the shelf.",
            "Lift the block onto the shelf.",
            "Move the block onto the shelf.",
        ),
        ("Stow the cube on the rack.", "Could you shelve that block?", "Block on the shelf."),
    ),
    "soccer-v3": (
        (
            "Push the ball into the goal.",
            "Score a goal with the ball.",
            "Knock the ball into the net.",
            "Please get the ball into the goal.",
            "Hit the ball into the goal.",
            "Roll the ball into the goal.",
        ),
        ("Put the football in the net.", "Could you score with that ball?", "Ball into the goal."),
    ),
    "stick-pull-v3": (
        (
            "Grab the stick and pull the container with it.",
            "Pull the container using the stick.",
            "Pick up the stick and drag the container.",
            "Please pull the container with the stick.",
            "Take the stick and hook the container towards the goal.",
            "Drag the container with the stick.",
        ),
        (
            "Hook the canister back with the rod.",
            "Could you use that stick to draw the box over?",
            "Stick, pull the container.",
        ),
    ),
    "stick-push-v3": (
        (
            "Grab the stick and push the container with it.",
            "Push the container using the stick.",
            "Pick up the stick and shove the container.",
            "Please push the container with the stick.",
            "Take the stick and poke the container towards the goal.",
            "Shove the container with the stick.",
        ),
        (
            "Prod the canister forward with the rod.",
            "Could you use that stick to push the box away?",
            "Stick, push the container.",
        ),
    ),
    "sweep-into-v3": (
        (
            "Push the puck into the hole.",
            "Slide the puck into the hole.",
            "Sweep the puck over to the hole.",
            "Please sweep the puck into the hole.",
            "Brush the puck into the hole.",
            "Move the puck into the hole.",
        ),
        ("Guide the disc into the opening.", "Could you get the puck into that hole?", "Puck in the hole."),
    ),
    "sweep-v3": (
        (
            "Push the puck off the table.",
            "Slide the puck off the table's edge.",
            "Sweep the puck off the table.",
            "Please sweep the puck off the edge.",
            "Brush the puck over the edge of the table.",
            "Knock the puck off the table.",
        ),
        ("Clear the disc off the side of the surface.", "Could you get the puck off the table?", "Puck off the table."),
    ),
    "window-close-v3": (
        (
            "Close the window.",
            "Shut the window.",
            "Push the window closed.",
            "Please close the window.",
            "Slide the window shut.",
            "Slide the window pane until it closes.",
        ),
        ("Draw the sliding pane to seal the opening.", "Could you shut that window?", "Window closed."),
    ),
    "window-open-v3": (
        (
            "Open the window.",
            "Push the window open.",
            "Slide the window pane open.",
            "Please open the window.",
            "Slide the window all the way open.",
            "Move the window handle to open it.",
        ),
        ("Draw the sliding pane back to uncover the opening.", "Could you open that window?", "Window open."),
    ),
}

# Long-horizon chains (the `lh` suite), keyed by chain name; same layout as above.
LONG_HORIZON_PHRASINGS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "lh-stock-drawer": (
        (
            "Place the first puck, open the drawer, place the second puck, and shut the drawer.",
            "Set a puck at its spot, pull the drawer open, put the next puck in its place, and push the drawer closed.",
            "Please put the first puck where it goes, open the drawer, place the other puck, and close the drawer.",
            "Stock the drawer: place one puck, open it, place another, close it.",
            "Move a puck to its place, get the drawer open, move the second puck to its place, then shut the drawer.",
            "Put the first puck away, open the drawer, then put the second puck away and close the drawer.",
        ),
        (
            "Deposit a disc at its mark, slide out the compartment, deposit the second disc at its mark, and slide the "
            "compartment home.",
            "Could you place a puck, open the drawer, place the other puck and close the drawer?",
            "Puck placed, drawer open, puck placed, drawer shut.",
        ),
    ),
    "lh-clear-bench": (
        (
            "Push one puck out of the way, place another, push the last one aside, then press the button.",
            "Clear the bench by pushing a puck aside, placing the next, pushing the third away, then hit the button.",
            "Please push the first puck away, set the second one in place, push the third away, and press the button.",
            "Tidy the bench: shove one puck aside, put one in place, shove the last aside, press the button.",
            "Slide one puck aside, move the next to its spot, slide the last one aside, then push the button down.",
            "Clear off the bench, puck by puck, then press the button.",
        ),
        (
            "Nudge a disc clear, position the second disc, nudge the third clear, then depress the switch.",
            "Could you clear the bench of its pucks and then press the button?",
            "Puck pushed, puck placed, puck pushed, button pressed.",
        ),
    ),
    "lh-inspect": (
        (
            "Touch the marked spot, line up the two pucks, and close the window.",
            "Check the mark, move both pucks into line, then shut the window.",
            "Please check the marked spot, line the pucks up, and close the window.",
            "Inspect the spot, arrange both pucks, then slide the window closed.",
            "Point at the mark, put the two pucks in position, and close the window.",
            "Do the inspection round: check the spot, line up the pucks, close the window.",
        ),
        (
            "Verify the indicated location, align the pair of discs, and seal the window.",
            "Could you check the spot, line up the pucks and close the window?",
            "Spot checked, pucks aligned, window shut.",
        ),
    ),
    "lh-line-up": (
        (
            "Touch the mark, place one puck, then push each of the other two onto its mark.",
            "Reach the marked spot, set a puck in its place and push the two others to their marks.",
            "Please check the marked spot, put one puck where it goes and push the other two to their spots.",
            "Check the spot, place a puck and line the remaining two up on their marks.",
            "Point at the mark, move one puck into place, then shove the other two onto their marks.",
            "Check the spot, set down one puck and move the other two onto their marks.",
        ),
        (
            "Verify the indicated location, deposit a disc at its mark, then nudge each other disc onto its target.",
            "Could you check the spot, place a puck and push the other pucks onto their marks?",
            "Spot checked, puck placed, pucks on marks.",
        ),
    ),
}


@dataclass(frozen=True)
class TaskPhrasings:
    """The ways of saying one task: `train[0]` is its canonical instruction."""

    train: tuple[str, ...]
    held_out: tuple[str, ...]

    def of(self, phrasing_set: str) -> tuple[str, ...]:
        """The phrasings of one set: "canonical" (just train[0]), "train" or "heldout"."""
        if phrasing_set == "canonical":
            return self.train[:1]
        if phrasing_set == "train":
            return self.train
        if phrasing_set == "heldout":
            if not self.held_out:
                raise ValueError(f"no held-out phrasings for a task whose canonical instruction is {self.train[0]!r}")
            return self.held_out
        raise ValueError(f"unknown phrasing set {phrasing_set!r} (known: {', '.join(PHRASING_SETS)})")


def task_phrasings(task: str) -> TaskPhrasings:
    """Training and held-out phrasings of a registered task (its canonical sentence first)."""
    spec = task_spec(task)
    extra, held_out = METAWORLD_PHRASINGS.get(task) or LONG_HORIZON_PHRASINGS.get(task) or ((), ())
    return TaskPhrasings(train=(spec.instruction, *extra), held_out=tuple(held_out))


def episode_instruction(task: str, seed: int | None, phrasing_set: str = "train") -> str:
    """The phrasing an episode of `task` started from `seed` is given: a deterministic draw
    from the set, so a run reproduces and two evaluations on the same seeds pair up.

    Consecutive seeds are dealt in blocks of len(set): each block is a shuffled copy of the
    set, so a few demonstrations per task (10 in the demo) already cover every phrasing
    about equally, while seeds taken with any stride still get varied wording. The shuffle
    has its own random stream, independent of the scene. Without a seed (hardware): the
    set's first phrasing.
    """
    options = task_phrasings(task).of(phrasing_set)
    if seed is None or len(options) == 1:
        return options[0]
    block, position = divmod(int(seed), len(options))
    shuffle = np.random.default_rng([block, zlib.crc32(task.encode()), zlib.crc32(b"phrasing")])
    return options[int(shuffle.permutation(len(options))[position])]


@cache
def _owners() -> dict[str, str]:
    """phrasing -> the table task it belongs to (phrasings are unique across tasks)."""
    owners: dict[str, str] = {}
    for table in (METAWORLD_PHRASINGS, LONG_HORIZON_PHRASINGS):
        for task in table:
            try:
                phrasings = task_phrasings(task)
            except KeyError:  # a chain that is not registered (any more): its phrasings belong to no task
                continue
            for text in (*phrasings.train, *phrasings.held_out):
                owners.setdefault(text, task)
    return owners


def phrasing_owner(text: str) -> str | None:
    """The task whose training or held-out phrasing `text` is, or None for free text."""
    return _owners().get(text)
